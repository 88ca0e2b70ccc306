//! The agent's Prometheus metrics (the `prometheus` crate's registry and
//! text exposition): per-process memory and growth from the scan, traced
//! outstanding bytes from trace windows, OOM kills, and the agent's own
//! work — scans, traces, incidents, the events and losses its traces
//! counted, kernel-table fill, its resident memory.
//!
//! Per-process series are rebuilt at each scan for the processes shown (the
//! [`PROCESSES_SHOWN`] largest by anonymous memory, plus every one growing
//! past the alert threshold or traced), so a node's churn of processes
//! never grows the exposition.

use prometheus::{
    core::Collector, Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use memtrace_report::Report;

/// Processes with per-process series, besides suspects and traced ones.
pub(super) const PROCESSES_SHOWN: usize = 50;

const PROCESS_LABELS: [&str; 4] = ["pid", "comm", "container", "pod_uid"];

pub(super) struct Metrics {
    registry: Registry,
    pub rss: IntGaugeVec,
    pub anon: IntGaugeVec,
    pub growth: GaugeVec,
    pub traced_outstanding: IntGaugeVec,
    pub oom_kills: IntCounter,
    pub processes: IntGauge,
    pub untracked: IntGauge,
    pub scans: IntCounter,
    pub scan_seconds: Gauge,
    pub suspects: IntGauge,
    pub traces_active: IntGauge,
    pub traces: IntCounterVec,
    pub incidents_written: IntCounter,
    pub incidents_deleted: IntCounter,
    pub reports: IntGauge,
    pub report_bytes: IntGauge,
    pub events: IntCounterVec,
    pub losses: IntCounterVec,
    pub table_fill: GaugeVec,
    pub resident: IntGaugeVec,
    pub oom_watch_up: IntGauge,
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Metrics {
    pub(super) fn new(node: &str) -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let opts = |name: &str, help: &str| Opts::new(name, help);
        let info = register(
            r,
            IntGaugeVec::new(
                opts(
                    "memtrace_agent_info",
                    "The agent's version and node (always 1).",
                ),
                &["version", "node"],
            )
            .expect("valid metric"),
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION"), node])
            .set(1);
        let per_process = |name: &str, help: &str| {
            IntGaugeVec::new(opts(name, help), &PROCESS_LABELS).expect("valid metric")
        };
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let counters = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(opts(name, help), &[label]).expect("valid metric")
        };
        Metrics {
            rss: register(
                r,
                per_process(
                    "memtrace_process_resident_bytes",
                    "Resident memory of a process.",
                ),
            ),
            anon: register(
                r,
                per_process(
                    "memtrace_process_anon_resident_bytes",
                    "Anonymous resident memory (heap, anonymous mappings) of a process.",
                ),
            ),
            growth: register(
                r,
                GaugeVec::new(
                    opts(
                        "memtrace_process_anon_growth_bytes_per_hour",
                        "Robust (Theil-Sen) growth of a process's anonymous memory over the \
                         scan window; 0 when not significant or a plateau.",
                    ),
                    &PROCESS_LABELS,
                )
                .expect("valid metric"),
            ),
            traced_outstanding: register(
                r,
                per_process(
                    "memtrace_process_traced_outstanding_bytes",
                    "Bytes its traced allocation stacks held at the end of its last trace \
                     window.",
                ),
            ),
            oom_kills: register(
                r,
                counter(
                    "memtrace_oom_kills_total",
                    "Processes the kernel's OOM killer chose.",
                ),
            ),
            processes: register(
                r,
                gauge(
                    "memtrace_agent_processes_watched",
                    "Processes in the last scan.",
                ),
            ),
            untracked: register(
                r,
                gauge(
                    "memtrace_agent_processes_untracked",
                    "Processes not watched in the last scan: the agent's process limit was \
                     reached.",
                ),
            ),
            scans: register(r, counter("memtrace_agent_scans_total", "Scans of /proc.")),
            scan_seconds: register(
                r,
                Gauge::new(
                    "memtrace_agent_scan_duration_seconds",
                    "How long the last scan of /proc took.",
                )
                .expect("valid metric"),
            ),
            suspects: register(
                r,
                gauge(
                    "memtrace_agent_suspects",
                    "Processes growing faster than --alert-growth in the last scan.",
                ),
            ),
            traces_active: register(
                r,
                gauge("memtrace_agent_traces_active", "Traces running now."),
            ),
            traces: register(
                r,
                IntCounterVec::new(
                    opts(
                        "memtrace_agent_traces_total",
                        "Traces run, by reason and result.",
                    ),
                    &["reason", "result"],
                )
                .expect("valid metric"),
            ),
            incidents_written: register(
                r,
                counter(
                    "memtrace_agent_incidents_written_total",
                    "Incidents written.",
                ),
            ),
            incidents_deleted: register(
                r,
                counter(
                    "memtrace_agent_incidents_deleted_total",
                    "Incidents deleted by retention (--max-reports, --max-report-bytes).",
                ),
            ),
            reports: register(r, gauge("memtrace_agent_reports", "Incidents kept.")),
            report_bytes: register(
                r,
                gauge("memtrace_agent_report_bytes", "Size of the incidents kept."),
            ),
            events: register(
                r,
                counters(
                    "memtrace_agent_events_total",
                    "Events counted by finished traces (allocations, frees).",
                    "kind",
                ),
            ),
            losses: register(
                r,
                counters(
                    "memtrace_agent_losses_total",
                    "Events finished traces could not account, by cause (see the report's \
                     losses).",
                    "kind",
                ),
            ),
            table_fill: register(
                r,
                GaugeVec::new(
                    opts(
                        "memtrace_agent_table_fill_ratio",
                        "Fill of a kernel table at the end of the last finished trace \
                         (live allocations, stacks).",
                    ),
                    &["table"],
                )
                .expect("valid metric"),
            ),
            resident: register(
                r,
                per_agent_process(
                    "memtrace_agent_resident_bytes",
                    "Resident memory of the agent and of its running traces.",
                ),
            ),
            oom_watch_up: register(
                r,
                gauge(
                    "memtrace_agent_oom_watch_up",
                    "1 while the OOM watch (memtrace --oom-only) runs.",
                ),
            ),
            registry,
        }
    }

    /// The text exposition.
    pub(super) fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding into memory");
        String::from_utf8(out).expect("text exposition is UTF-8")
    }

    /// Counts what a finished trace's report says: its events, losses and
    /// table fill.
    pub(super) fn count_trace(&self, report: &Report, max_live: u32, max_stacks: u32) {
        let t = &report.totals;
        self.events
            .with_label_values(&["allocations"])
            .inc_by(t.allocations);
        self.events.with_label_values(&["frees"]).inc_by(t.frees);
        for (kind, n) in report.losses.nonzero() {
            self.losses.with_label_values(&[kind]).inc_by(n);
        }
        let fill = |used: u64, cap: u32| (used as f64 / f64::from(cap)).min(1.0);
        self.table_fill
            .with_label_values(&["live"])
            .set(fill(t.outstanding_allocations, max_live));
        self.table_fill
            .with_label_values(&["stacks"])
            .set(fill(t.stacks, max_stacks));
    }
}

fn per_agent_process(name: &str, help: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &["process"]).expect("valid metric")
}
