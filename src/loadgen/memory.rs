//! A process's resident memory from `/proc/<pid>/status`: `VmRSS` (now) and
//! `VmHWM` (the kernel's own peak since the process started).
//!
//! Linux only; never writes anything under /proc.

use serde::Serialize;

/// One reading, in KiB as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemorySample {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` out of a `/proc/<pid>/status` text; `None` when
/// either is missing (a kernel thread, or not Linux's format).
pub fn parse_status(status: &str) -> Option<MemorySample> {
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            // "   123456 kB"
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some(MemorySample {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
    })
}

/// Reads the status of process `pid` now.
pub fn sample(pid: u32) -> std::io::Result<MemorySample> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/status has no VmRSS/VmHWM lines"),
        )
    })
}

/// What the run saw of a process's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryReport {
    pub pid: u32,
    pub samples: u64,
    /// The highest `VmRSS` among the samples.
    pub peak_rss_kib: u64,
    /// `VmRSS` at the last sample.
    pub last_rss_kib: u64,
    /// `VmHWM` at the last sample: the peak over the process's whole life,
    /// including moments between samples.
    pub hwm_kib: u64,
}

impl MemoryReport {
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            samples: 0,
            peak_rss_kib: 0,
            last_rss_kib: 0,
            hwm_kib: 0,
        }
    }

    pub fn record(&mut self, sample: MemorySample) {
        self.samples += 1;
        self.peak_rss_kib = self.peak_rss_kib.max(sample.rss_kib);
        self.last_rss_kib = sample.rss_kib;
        self.hwm_kib = self.hwm_kib.max(sample.hwm_kib);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str =
        "Name:\torder-engine\nVmPeak:\t 2000000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   80000 kB\nThreads:\t9\n";

    #[test]
    fn the_status_file_gives_rss_and_high_water_mark() {
        // Proves the two fields are read by exact name (VmPeak is not VmHWM) in KiB.
        assert_eq!(
            parse_status(STATUS),
            Some(MemorySample {
                rss_kib: 80_000,
                hwm_kib: 81_234
            })
        );
        assert_eq!(parse_status("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn the_report_keeps_the_peak_and_the_last_reading() {
        // Proves the peak survives a later drop and the HWM is the largest seen.
        let mut report = MemoryReport::new(7);
        for (rss, hwm) in [(100, 100), (300, 300), (200, 310)] {
            report.record(MemorySample {
                rss_kib: rss,
                hwm_kib: hwm,
            });
        }
        assert_eq!(
            (report.samples, report.peak_rss_kib, report.last_rss_kib, report.hwm_kib),
            (3, 300, 200, 310)
        );
    }

    #[test]
    fn this_process_can_be_sampled() {
        // Proves the reader works on a real /proc (the test process itself).
        let sample = sample(std::process::id()).unwrap();
        assert!(sample.rss_kib > 0 && sample.hwm_kib >= sample.rss_kib, "{sample:?}");
    }
}
