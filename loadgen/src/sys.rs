//! What the load generator reads from the operating system: resident memory and CPU time of
//! a process (/proc) and the open-file limit, raised to its hard maximum when a run needs it.

/// Resident set size of `pid`, from /proc/PID/status (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User + system CPU seconds `pid` has used, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = s.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace();
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| (utime + stime) as f64 / hz as f64)
}

/// Makes room for `conns` sockets (plus a margin for the runtime and stdio): raises the soft
/// open-file limit up to the hard one, or says how far short it is.
pub fn ensure_fds(conns: u64) -> Result<u64, String> {
    let need = conns + 64;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err("getrlimit(RLIMIT_NOFILE) failed".into());
    }
    if lim.rlim_cur >= need {
        return Ok(lim.rlim_cur);
    }
    if lim.rlim_max < need {
        return Err(format!(
            "{conns} connections need about {need} open files; the hard limit is {} \
             (raise it with `ulimit -Hn`, or run fewer connections)",
            lim.rlim_max
        ));
    }
    let raised = libc::rlimit {
        rlim_cur: need,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(format!("could not raise the open-file limit to {need}"));
    }
    Ok(need)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's own CPU time is read and grows with work done.
    #[test]
    fn cpu_seconds_reads_this_process() {
        let me = std::process::id();
        let before = cpu_seconds(me).expect("own /proc/PID/stat");
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = cpu_seconds(me).expect("own /proc/PID/stat");
        assert!(after > before, "{before} -> {after}");
        assert_eq!(cpu_seconds(u32::MAX), None);
    }
}
