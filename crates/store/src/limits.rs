//! How much each stage of a delivery may hold: the sink queue, one
//! coalesced write, a write into the spool, a transaction's batches kept for
//! the spool. The shipper's 20 MiB bound is made of these, so they stand
//! together, each with what was measured when it was set.

/// What the sink queue holds at most. A transaction that takes what queues
/// up (`postgres::BatchFeed`) drains it as it goes, so the queue only has to
/// cover a commit: 512 KiB with 2 MiB held per transaction measured as fast
/// as 1 MiB with 1.5 MiB held or faster (tail 1.67–1.78 s against
/// 1.89–1.95 s, wrap 1.62–1.77 against 1.68–1.82, alternating runs), at the
/// same peak (18.2–19.0 MiB).
pub const QUEUE_BYTES: usize = 1 << 19;

/// What one coalesced write takes at most ([`BatchReceiver::coalesce`]).
/// Writes stream what they encode (a COPY in 64 KiB pieces, the spool in
/// rows of 256 KiB), so this bounds the records held — and sets how many
/// commits a burst costs (PostgreSQL flushes its WAL at each). Measured on
/// the 1M-line workload: 1 MiB writes took the spooling shipper to 21.6 MiB,
/// 512 KiB keeps it at 18; into PostgreSQL 0.59× of `\copy` where 1 MiB
/// reached 0.65× and 256 KiB 0.54×.
pub const COALESCE_BYTES: usize = 512 * 1024;

/// What one coalesced write into the spool takes at most: its records are
/// held while each spool row is encoded as JSON and SQLite copies that
/// twice more, so half of [`COALESCE_BYTES`]. Measured on the 1M-line
/// workload with PostgreSQL down: the spooling shipper peaked at 20.3–20.8
/// MiB with 512 KiB, 19.0–19.5 MiB with this.
pub const SPOOL_COALESCE_BYTES: usize = 256 * 1024;

/// What a transaction that goes straight to PostgreSQL, not through the
/// spool, holds at most of the batches it took from the queue as it went
/// (`postgres::BatchFeed`): they are kept until it commits, to be spooled
/// if it fails. Measured on the 1M-line workload: transactions of ~7,000
/// records where the queue alone gave ~3,700 took `wrap` into PostgreSQL
/// from 0.45× to 0.70× of `\copy`, the shipper's peak from 19.0 to 19.9 MiB
/// with 2 MiB and a 1 MiB queue — up to 20.1 MiB in some runs, past issue
/// 11's bound. A 512 KiB queue ([`QUEUE_BYTES`]) leaves room for 2 MiB here.
pub const HELD_BYTES: usize = 2 << 20;
