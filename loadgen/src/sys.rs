//! What the load generator reads from the operating system: resident memory of a process
//! (/proc) and the open-file limit, raised to its hard maximum when a run needs it.

/// Resident set size of `pid`, from /proc/PID/status (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
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
