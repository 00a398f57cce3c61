//! The standard Prometheus process metrics (`process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_cpu_seconds_total`, `process_start_time_seconds`, as the official client
//! libraries name them) read from `/proc/self` at scrape time, and `imserver_build_info`
//! (always 1, the version in a label) that dashboards and alerts join on.

use procfs::process::{LimitValue, Process};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Reads `/proc/self` on each scrape; a scrape on a system without procfs leaves the
/// process metrics out instead of failing.
#[derive(Debug)]
pub struct ProcessMetrics {
    version: &'static str,
}

impl ProcessMetrics {
    /// `version` is the server's (the binary's `CARGO_PKG_VERSION`).
    pub fn new(version: &'static str) -> Self {
        Self { version }
    }
}

fn gauge_f64(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ProcessMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let mut info = e.encode_descriptor(
            "imserver_build_info",
            "Always 1; the server's version is in the label.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64).encode(info.encode_family(&[("version", self.version)])?)?;

        let Ok(me) = Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(e.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                cpu.metric_type(),
            )?)?;
            let rss = stat.rss.saturating_mul(procfs::page_size());
            gauge_f64(
                &mut e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss as f64,
            )?;
            gauge_f64(
                &mut e,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stat.vsize as f64,
            )?;
            if let Ok(boot) = procfs::boot_time_secs() {
                gauge_f64(
                    &mut e,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    boot as f64 + stat.starttime as f64 / ticks,
                )?;
            }
        }
        if let Ok(n) = me.fd_count() {
            gauge_f64(
                &mut e,
                "process_open_fds",
                "Number of open file descriptors.",
                n as f64,
            )?;
        }
        if let Ok(limits) = me.limits() {
            if let LimitValue::Value(n) = limits.max_open_files.soft_limit {
                gauge_f64(
                    &mut e,
                    "process_max_fds",
                    "Maximum number of open file descriptors.",
                    n as f64,
                )?;
            }
        }
        Ok(())
    }
}
