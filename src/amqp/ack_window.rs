//! The submission consumer's acknowledgement window: which deliveries of its
//! channel are still being handled, which are handled and wait for their
//! ack, and when one `basic.ack` with `multiple` settles many of them.
//!
//! Pure bookkeeping (no I/O; the time is passed in). Must never produce an
//! ack that names, or with `multiple` reaches past, a delivery still being
//! handled: `multiple` acknowledges every earlier unacknowledged delivery of
//! the channel, so it may only reach as far as the settled prefix.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One `basic.ack` to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) tag: u64,
    /// Also acknowledges every earlier delivery the broker still counts as
    /// unacknowledged on this channel.
    pub(crate) multiple: bool,
}

/// A delivery tag at or below one still outstanding on the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("delivery tag {tag} arrived after tag {last}; tags must rise on a channel")]
pub struct TagOutOfOrder {
    pub tag: u64,
    pub last: u64,
}

/// Where a delivery the broker counts as unacknowledged stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Its handler is still running.
    InHand,
    /// Handled, its outcome safe; waiting for an ack since then.
    Held(Instant),
}

#[derive(Debug)]
pub(crate) struct AckWindow {
    /// Every delivery the broker counts as unacknowledged, by delivery tag
    /// (the broker numbers a channel's deliveries in the order it sends
    /// them). Nacked or acked deliveries leave it at once, so it never holds
    /// more than the channel's prefetch.
    outstanding: BTreeMap<u64, Slot>,
    /// Held acks behind a delivery still in hand that are sent one by one
    /// rather than wait longer: held deliveries occupy prefetch slots, so a
    /// slow delivery (one under quick retries) must not starve the others.
    held_max: usize,
    /// Longest a held ack waits for the deliveries before it to finish.
    hold_max: Duration,
}

impl AckWindow {
    pub(crate) fn new(held_max: usize, hold_max: Duration) -> Self {
        Self {
            outstanding: BTreeMap::new(),
            held_max: held_max.max(1),
            hold_max,
        }
    }

    /// A delivery arrived; its handler starts. A tag that does not rise
    /// above every outstanding one breaks the rule `multiple` depends on:
    /// the caller must drop the channel (its deliveries return to the queue).
    pub(crate) fn received(&mut self, tag: u64) -> Result<(), TagOutOfOrder> {
        if let Some((&last, _)) = self.outstanding.last_key_value() {
            if tag <= last {
                return Err(TagOutOfOrder { tag, last });
            }
        }
        self.outstanding.insert(tag, Slot::InHand);
        Ok(())
    }

    /// The delivery's outcome is safe; it may be acknowledged.
    pub(crate) fn handled(&mut self, tag: u64, now: Instant) {
        if let Some(slot) = self.outstanding.get_mut(&tag) {
            *slot = Slot::Held(now);
        }
    }

    /// The delivery was nacked (or rejected) on its own; it is no longer
    /// outstanding, and a later `multiple` ack may reach past it.
    pub(crate) fn nacked(&mut self, tag: u64) {
        self.outstanding.remove(&tag);
    }

    /// Deliveries still being handled.
    pub(crate) fn in_hand(&self) -> usize {
        self.outstanding.values().filter(|s| **s == Slot::InHand).count()
    }

    /// Handled deliveries whose ack is not sent yet.
    pub(crate) fn held(&self) -> usize {
        self.outstanding.len() - self.in_hand()
    }

    /// The acks to send now: one (with `multiple` when it covers more than
    /// one) for the handled deliveries before the first still in hand; and
    /// each held one behind it on its own once there are `held_max` of them
    /// or the oldest has waited `hold_max`.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Ack> {
        let mut acks = self.prefix();
        let oldest = self
            .outstanding
            .values()
            .filter_map(|s| match s {
                Slot::Held(since) => Some(*since),
                Slot::InHand => None,
            })
            .min();
        let overdue = oldest.is_some_and(|since| now.saturating_duration_since(since) >= self.hold_max);
        if overdue || self.held() >= self.held_max {
            acks.extend(self.each_held());
        }
        acks
    }

    /// Every ack that may be sent, whatever has waited how long: for a
    /// consumer that stops (what it handled must not be redelivered).
    pub(crate) fn all(&mut self) -> Vec<Ack> {
        let mut acks = self.prefix();
        acks.extend(self.each_held());
        acks
    }

    /// When the oldest held ack behind a delivery in hand falls due, if any.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.outstanding
            .values()
            .filter_map(|s| match s {
                Slot::Held(since) => Some(*since + self.hold_max),
                Slot::InHand => None,
            })
            .min()
    }

    /// The handled deliveries before the first still in hand, as one ack.
    fn prefix(&mut self) -> Vec<Ack> {
        let mut last = None;
        let mut count = 0usize;
        while let Some(entry) = self.outstanding.first_entry() {
            if *entry.get() == Slot::InHand {
                break;
            }
            last = Some(*entry.key());
            count += 1;
            entry.remove();
        }
        last.map(|tag| Ack {
            tag,
            multiple: count > 1,
        })
        .into_iter()
        .collect()
    }

    /// Every held ack (all behind a delivery in hand), each on its own.
    fn each_held(&mut self) -> Vec<Ack> {
        let held: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Held(_)))
            .map(|(tag, _)| *tag)
            .collect();
        for tag in &held {
            self.outstanding.remove(tag);
        }
        held.into_iter().map(|tag| Ack { tag, multiple: false }).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_millis(50);

    fn window(tags: impl IntoIterator<Item = u64>) -> AckWindow {
        let mut window = AckWindow::new(8, HOLD);
        for tag in tags {
            window.received(tag).unwrap();
        }
        window
    }

    fn ack(tag: u64, multiple: bool) -> Ack {
        Ack { tag, multiple }
    }

    #[test]
    fn handled_deliveries_in_order_are_one_multiple_ack() {
        // Proves a run of handled deliveries from the front costs one frame, naming the last.
        let now = Instant::now();
        let mut w = window(1..=5);
        for tag in 1..=4 {
            w.handled(tag, now);
        }
        assert_eq!(w.due(now), [ack(4, true)]);
        assert_eq!((w.in_hand(), w.held()), (1, 0));
        w.handled(5, now);
        assert_eq!(w.due(now), [ack(5, false)], "a single delivery needs no multiple");
        assert_eq!(w.due(now), []);
    }

    #[test]
    fn a_multiple_ack_never_reaches_past_a_delivery_in_hand() {
        // Proves deliveries handled after one still in hand wait, and are covered once it finishes.
        let now = Instant::now();
        let mut w = window(1..=4);
        for tag in [2, 3, 4] {
            w.handled(tag, now);
        }
        assert_eq!(w.due(now), [], "1 is still in hand");
        w.handled(1, now);
        assert_eq!(w.due(now), [ack(4, true)]);
    }

    #[test]
    fn a_nacked_delivery_is_stepped_over_but_never_named() {
        // Proves a nack leaves the window at once, and the multiple ack names the last handled delivery, not the nacked one.
        let now = Instant::now();
        let mut w = window(1..=4);
        w.handled(1, now);
        w.handled(2, now);
        w.nacked(3);
        assert_eq!(w.due(now), [ack(2, true)]);
        w.nacked(4);
        assert_eq!(w.due(now), [], "nothing outstanding to name");
        assert_eq!((w.in_hand(), w.held()), (0, 0));
        let mut w = window(1..=3);
        w.nacked(1);
        w.handled(2, now);
        w.handled(3, now);
        assert_eq!(w.due(now), [ack(3, true)], "1 is no longer outstanding at the broker");
    }

    #[test]
    fn a_slow_delivery_does_not_hold_the_others_past_the_bounds() {
        // Proves held acks behind a delivery in hand go out one by one when they have waited hold_max, or when held_max of them wait.
        let start = Instant::now();
        let mut w = window(1..=3);
        w.handled(2, start);
        w.handled(3, start);
        assert_eq!(w.due(start), []);
        assert_eq!(w.deadline(), Some(start + HOLD));
        assert_eq!(w.due(start + HOLD), [ack(2, false), ack(3, false)]);
        assert_eq!(w.deadline(), None);
        // 1 is still in hand; the broker may now send more behind it.
        let mut w = AckWindow::new(3, HOLD);
        for tag in 1..=10 {
            w.received(tag).unwrap();
        }
        w.handled(5, start);
        w.handled(6, start);
        assert_eq!(w.due(start), []);
        w.handled(9, start);
        assert_eq!(w.due(start), [ack(5, false), ack(6, false), ack(9, false)]);
        // Once 1 finishes, the front moves to the next in hand (2), not past it.
        w.handled(1, start);
        assert_eq!(w.due(start), [ack(1, false)]);
        for tag in [2, 3, 4, 7, 8] {
            w.handled(tag, start);
        }
        assert_eq!(w.due(start), [ack(8, true)], "5, 6 were acked on their own already");
        w.handled(10, start);
        assert_eq!(w.due(start), [ack(10, false)]);
    }

    #[test]
    fn stopping_acks_every_handled_delivery() {
        // Proves a consumer that stops acks what it handled, and nothing it still holds.
        let now = Instant::now();
        let mut w = window(1..=4);
        w.handled(1, now);
        w.handled(2, now);
        w.handled(4, now);
        assert_eq!(w.all(), [ack(2, true), ack(4, false)]);
        assert_eq!((w.in_hand(), w.held()), (1, 0));
    }

    #[test]
    fn a_tag_out_of_order_is_refused() {
        // Proves the window refuses a delivery tag not above one it holds (the prefix rule depends on the order).
        let mut w = window([5]);
        assert_eq!(w.received(4), Err(TagOutOfOrder { tag: 4, last: 5 }));
        assert_eq!(w.received(5), Err(TagOutOfOrder { tag: 5, last: 5 }));
        assert_eq!(w.received(6), Ok(()));
    }
}
