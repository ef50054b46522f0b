//! `skiff lab netem --delay` on kernels without the netem qdisc: a packet delayer in user
//! space, one process per impaired host.
//!
//! The host's iptables send every packet in and out of its `eth0` to NFQUEUE queue 0 (with
//! `--queue-bypass`, so packets pass undelayed if the delayer is gone rather than vanish). The
//! delayer, running inside the host's network namespace, takes each packet's metadata (not its
//! bytes), holds it for the delay and then lets it go, in arrival order. A constant delay keeps
//! the order of the packets, as netem does without jitter.
//!
//! The lab's hosts are namespaces of one kernel, so a packet between two impaired hosts is held
//! twice: once leaving one, once entering the other — the same as netem on both ends of each
//! veth.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nfq::{Queue, Verdict};

/// The NFQUEUE queue the lab's rules send packets to (queues are per network namespace).
pub const QUEUE: u16 = 0;

/// The longest delay accepted: held packets pile up in the kernel's queue meanwhile.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Packets the kernel may hold for the delayer; beyond it they pass undelayed (fail open).
const QUEUE_LENGTH: u32 = 16_384;

/// `1ms`, `500us`, `0.5ms`, `2s` → a duration (what `tc netem delay` accepts, without jitter).
pub fn parse_delay(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .with_context(|| format!("--delay {text:?}: give a time such as 1ms, 500us or 0.2s"))?;
    let seconds = match unit {
        "s" => value,
        "ms" | "" => value / 1e3,
        "us" | "µs" => value / 1e6,
        other => bail!("--delay {text:?}: unknown unit {other:?} (use s, ms or us)"),
    };
    let delay = Duration::from_secs_f64(seconds);
    if delay.is_zero() || delay > MAX_DELAY {
        bail!("--delay {text:?}: give more than 0 and at most {MAX_DELAY:?}");
    }
    Ok(delay)
}

/// How often a delayer holding packets looks for new ones: a packet that arrives meanwhile is
/// stamped up to this late, so the delay it gets is `delay` plus at most this much.
const TICK: Duration = Duration::from_micros(100);

/// Runs until killed: binds queue [`QUEUE`] in the current network namespace, prints `ready`
/// on stdout, then holds every queued packet for `delay`.
pub fn run(delay: Duration) -> anyhow::Result<()> {
    let mut queue = Queue::open().context("opening a netfilter queue socket")?;
    queue
        .bind(QUEUE)
        .context("binding NFQUEUE 0 (is another delayer running in this host?)")?;
    queue.set_copy_range(QUEUE, 0)?;
    queue.set_queue_max_len(QUEUE, QUEUE_LENGTH)?;
    queue.set_fail_open(QUEUE, true)?;
    println!("ready");
    std::io::stdout().flush()?;

    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    loop {
        if held.is_empty() {
            // Nothing to let go: sleep in the kernel until a packet comes.
            queue.set_nonblocking(false);
            let message = queue.recv().context("reading the netfilter queue")?;
            held.push_back((Instant::now() + delay, message));
            queue.set_nonblocking(true);
        }
        loop {
            match queue.recv() {
                Ok(message) => held.push_back((Instant::now() + delay, message)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("reading the netfilter queue"),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, mut message)) = held.pop_front() {
                message.set_verdict(Verdict::Accept);
                queue.verdict(message).context("releasing a packet")?;
            }
        }
        if let Some((due, _)) = held.front() {
            std::thread::sleep(due.saturating_duration_since(Instant::now()).min(TICK));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_read_as_tc_writes_them() {
        for (text, want) in [
            ("1ms", Duration::from_millis(1)),
            ("500us", Duration::from_micros(500)),
            ("0.5ms", Duration::from_micros(500)),
            ("2s", Duration::from_secs(2)),
            ("20", Duration::from_millis(20)),
        ] {
            assert_eq!(parse_delay(text).ok(), Some(want), "{text}");
        }
    }

    #[test]
    fn bad_delays_name_the_flag() {
        for bad in ["", "ms", "-1ms", "0ms", "3s", "1h", "1.2.3ms"] {
            let error = parse_delay(bad).expect_err(bad).to_string();
            assert!(error.contains("--delay"), "{bad}: {error}");
        }
    }
}
