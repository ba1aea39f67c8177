//! Prometheus metrics, in the text exposition format: gate refusals by reason, delivery attempts by
//! channel, provider and outcome, trigger fires by outcome, journey steps by kind and status, the
//! send → provider, event → decision and event → provider latencies, and the outbox's depth (read
//! from the database at scrape time, so it is right whichever host queued what). Labels carry codes and
//! names, never player data.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds of the latency histogram, in seconds (§10: event → delivery p95 within 30–90 s).
const BUCKETS: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 90.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// The latency histograms: (name, help, label).
const LATENCIES: [(&str, &str, &str); 3] = [
    ("pitboss_send_to_provider_seconds", "From the send request to the provider's acceptance.", "channel"),
    (
        "pitboss_event_to_decision_seconds",
        "From an event's acceptance to what a trigger made of it (fired, suppressed, …).",
        "outcome",
    ),
    (
        "pitboss_event_to_provider_seconds",
        "From an event's acceptance to the provider's acceptance of the message a trigger sent for it.",
        "channel",
    ),
];

#[derive(Debug, Default)]
pub struct Metrics {
    refusals: Mutex<BTreeMap<String, u64>>,
    attempts: Mutex<BTreeMap<(String, String, String), u64>>,
    fires: Mutex<BTreeMap<String, u64>>,
    steps: Mutex<BTreeMap<(String, String), u64>>,
    offer_refusals: Mutex<BTreeMap<String, u64>>,
    bonus_actions: Mutex<BTreeMap<(String, String), u64>>,
    /// By (index in LATENCIES, label value).
    latency: Mutex<BTreeMap<(usize, String), Histogram>>,
}

impl Metrics {
    /// The gate refused (or deferred) a message for this reason.
    pub fn refusal(&self, code: &str) {
        *self.refusals.lock().expect("metrics").entry(code.to_string()).or_default() += 1;
    }

    /// One provider call (or inbox write) and how it ended: accepted, failed, rejected.
    pub fn attempt(&self, channel: &str, provider: &str, outcome: &str) {
        let key = (channel.to_string(), provider.to_string(), outcome.to_string());
        *self.attempts.lock().expect("metrics").entry(key).or_default() += 1;
    }

    /// From the send request to the provider's acceptance.
    pub fn send_to_provider(&self, channel: &str, seconds: f64) {
        self.observe(0, channel, seconds);
    }

    /// A trigger took an event: its outcome, and how long after the event's acceptance.
    pub fn fire(&self, outcome: &str, seconds: f64) {
        *self.fires.lock().expect("metrics").entry(outcome.to_string()).or_default() += 1;
        self.observe(1, outcome, seconds);
    }

    /// A message a trigger sent reached its provider, this long after the event's acceptance.
    pub fn event_to_provider(&self, channel: &str, seconds: f64) {
        self.observe(2, channel, seconds);
    }

    /// A journey step was taken.
    pub fn journey_step(&self, kind: &str, status: &str) {
        let key = (kind.to_string(), status.to_string());
        *self.steps.lock().expect("metrics").entry(key).or_default() += 1;
    }

    /// A ranked offer the host refused, by reason (`out_of_bounds`: a scorer answered outside a
    /// template's bounds).
    pub fn offer_refusal(&self, code: &str) {
        *self.offer_refusals.lock().expect("metrics").entry(code.to_string()).or_default() += 1;
    }

    /// A bonus rule's action: applied, or refused by the host.
    pub fn bonus_action(&self, action: &str, outcome: &str) {
        let key = (action.to_string(), outcome.to_string());
        *self.bonus_actions.lock().expect("metrics").entry(key).or_default() += 1;
    }

    fn observe(&self, which: usize, label: &str, seconds: f64) {
        self.latency.lock().expect("metrics").entry((which, label.to_string())).or_default().observe(seconds);
    }

    /// The exposition text; `depth` is the outbox by status, `set_aside` the events each bus consumer
    /// set aside.
    pub fn render(&self, depth: &[(String, i64)], set_aside: &[(String, i64)]) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP pitboss_events_set_aside_total Events a bus consumer could not apply and passed over.\n",
        );
        out.push_str("# TYPE pitboss_events_set_aside_total counter\n");
        // The profiles consumer always shows, at 0 too, so that an alert on it has a series to watch.
        if !set_aside.iter().any(|(c, _)| c == "profiles") {
            out.push_str("pitboss_events_set_aside_total{consumer=\"profiles\"} 0\n");
        }
        for (consumer, n) in set_aside {
            let _ = writeln!(out, "pitboss_events_set_aside_total{{consumer=\"{consumer}\"}} {n}");
        }
        out.push_str(
            "# HELP pitboss_gate_refusals_total Messages the policy gate refused or deferred, by reason.\n",
        );
        out.push_str("# TYPE pitboss_gate_refusals_total counter\n");
        for (reason, n) in self.refusals.lock().expect("metrics").iter() {
            let _ = writeln!(out, "pitboss_gate_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str(
            "# HELP pitboss_delivery_attempts_total Provider calls by channel, provider and outcome.\n",
        );
        out.push_str("# TYPE pitboss_delivery_attempts_total counter\n");
        for ((channel, provider, outcome), n) in self.attempts.lock().expect("metrics").iter() {
            let _ = writeln!(
                out,
                "pitboss_delivery_attempts_total{{channel=\"{channel}\",provider=\"{provider}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP pitboss_outbox_depth Deliveries waiting or in flight, by status.\n");
        out.push_str("# TYPE pitboss_outbox_depth gauge\n");
        for status in ["queued", "deferred", "sending"] {
            let n = depth.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "pitboss_outbox_depth{{status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP pitboss_offer_refusals_total Ranked offers the host refused, by reason.\n");
        out.push_str("# TYPE pitboss_offer_refusals_total counter\n");
        for (reason, n) in self.offer_refusals.lock().expect("metrics").iter() {
            let _ = writeln!(out, "pitboss_offer_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str(
            "# HELP pitboss_bonus_actions_total Bonus rule actions, applied or refused by the host.\n",
        );
        out.push_str("# TYPE pitboss_bonus_actions_total counter\n");
        for ((action, outcome), n) in self.bonus_actions.lock().expect("metrics").iter() {
            let _ =
                writeln!(out, "pitboss_bonus_actions_total{{action=\"{action}\",outcome=\"{outcome}\"}} {n}");
        }
        out.push_str(
            "# HELP pitboss_trigger_fires_total What triggers made of the events they matched, by outcome.\n",
        );
        out.push_str("# TYPE pitboss_trigger_fires_total counter\n");
        for (outcome, n) in self.fires.lock().expect("metrics").iter() {
            let _ = writeln!(out, "pitboss_trigger_fires_total{{outcome=\"{outcome}\"}} {n}");
        }
        out.push_str("# HELP pitboss_journey_steps_total Journey steps taken, by node kind and status.\n");
        out.push_str("# TYPE pitboss_journey_steps_total counter\n");
        for ((kind, status), n) in self.steps.lock().expect("metrics").iter() {
            let _ = writeln!(out, "pitboss_journey_steps_total{{kind=\"{kind}\",status=\"{status}\"}} {n}");
        }
        let latency = self.latency.lock().expect("metrics");
        for (which, (name, help, label)) in LATENCIES.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for ((_, value), h) in latency.range((which, String::new())..(which + 1, String::new())) {
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ =
                        writeln!(out, "{name}_bucket{{{label}=\"{value}\",le=\"{bound}\"}} {}", h.counts[i]);
                }
                let _ = writeln!(out, "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {}", h.count);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.send_to_provider("email", 0.02);
        m.send_to_provider("email", 3.0);
        let text = m.render(&[("queued".into(), 4)], &[]);
        assert!(text.contains("pitboss_send_to_provider_seconds_bucket{channel=\"email\",le=\"0.025\"} 1"));
        assert!(text.contains("pitboss_send_to_provider_seconds_bucket{channel=\"email\",le=\"5\"} 2"));
        assert!(text.contains("pitboss_send_to_provider_seconds_count{channel=\"email\"} 2"));
        assert!(text.contains("pitboss_outbox_depth{status=\"queued\"} 4"));
        assert!(text.contains("pitboss_outbox_depth{status=\"sending\"} 0"));
        m.fire("fired", 0.004);
        m.event_to_provider("push", 0.2);
        let text = m.render(&[], &[]);
        assert!(text.contains("pitboss_trigger_fires_total{outcome=\"fired\"} 1"));
        assert!(text.contains("pitboss_event_to_decision_seconds_bucket{outcome=\"fired\",le=\"0.01\"} 1"));
        assert!(text.contains("pitboss_event_to_provider_seconds_bucket{channel=\"push\",le=\"0.25\"} 1"));
        assert!(text.contains("pitboss_send_to_provider_seconds_count{channel=\"email\"} 2"));
    }
}
