//! What ingest refused or cut, by reason: counted here, shown by `/metrics`
//! (`vigie_collector_agents_refused_total{reason}`, `vigie_collector_batches_rate_dropped_total`)
//! and `/healthz`.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! reasons {
    ($($variant:ident => $text:literal: $doc:literal,)*) => {
        /// Why a stream was refused or cut.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Reason { $(#[doc = $doc] $variant),* }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $text),* }
            }
        }
    };
}

reasons! {
    Hello => "hello": "no valid `Hello` first (names, interval, sizes), or none in time",
    Certificate => "certificate": "no client certificate, or one not valid for the node and cluster",
    Duplicate => "duplicate": "another live stream already speaks for this node",
    Limits => "limits": "a stream cut for a message over a cap (size, results, journal)",
    Idle => "idle": "a stream cut for sending nothing for three intervals",
}

/// Counters by [`Reason`], shared by ingest and the API.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; Reason::ALL.len()],
    /// Batches dropped (the stream kept) for coming faster than the per-stream rate.
    rate_dropped: AtomicU64,
}

impl Refusals {
    pub fn count(&self, reason: Reason) {
        self.counts[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: Reason) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }

    pub fn drop_for_rate(&self) {
        self.rate_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rate_dropped(&self) -> u64 {
        self.rate_dropped.load(Ordering::Relaxed)
    }

    /// Streams refused or cut, every reason together.
    pub fn total(&self) -> u64 {
        Reason::ALL.iter().map(|r| self.get(*r)).sum()
    }

    /// Every reason with its count, zeros included (a series that exists before it moves).
    pub fn by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Reason::ALL.iter().map(|r| (r.as_str(), self.get(*r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_by_reason() {
        let r = Refusals::default();
        r.count(Reason::Duplicate);
        r.count(Reason::Duplicate);
        r.count(Reason::Hello);
        r.drop_for_rate();
        assert_eq!(r.get(Reason::Duplicate), 2);
        assert_eq!(
            r.total(),
            3,
            "a batch dropped for rate is not a stream refused"
        );
        assert_eq!(r.rate_dropped(), 1);
        assert_eq!(
            r.by_reason().collect::<Vec<_>>(),
            [
                ("hello", 1),
                ("certificate", 0),
                ("duplicate", 2),
                ("limits", 0),
                ("idle", 0)
            ]
        );
    }
}
