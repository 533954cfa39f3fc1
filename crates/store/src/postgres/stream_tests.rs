//! Transactions that take the batches following their first, against a
//! real PostgreSQL server (started once for this test binary by the same
//! harness as the end-to-end tests).

#[path = "../../../../tests/e2e/bounded.rs"]
mod bounded;
#[path = "../../../../tests/e2e/pg_server.rs"]
mod pg_server;

use super::PostgresStore;
use crate::sink::BatchFeed;
use crate::sink::{Batch, Fed, RunContext, SeqRecord, Sink};
use crate::spool::{RetryBackoff, Spool, SpoolingSink};
use crate::sqlite::SqliteStore;
use pmon_core::record::{LogRecord, StreamKind};
use std::collections::VecDeque;

/// Batches handed over in order; `on_next` runs before each one is.
struct ListFeed<'a> {
    batches: VecDeque<Batch>,
    put_back: Vec<Batch>,
    sent: usize,
    calls: usize,
    on_next: Box<dyn FnMut(usize) + 'a>,
    on_commit: Box<dyn FnMut() + 'a>,
}

impl<'a> ListFeed<'a> {
    fn new(batches: Vec<Batch>) -> ListFeed<'a> {
        ListFeed {
            batches: batches.into(),
            put_back: Vec::new(),
            sent: 0,
            calls: 0,
            on_next: Box::new(|_| {}),
            on_commit: Box::new(|| {}),
        }
    }
}

impl BatchFeed for ListFeed<'_> {
    fn next(&mut self) -> Option<Batch> {
        self.calls += 1;
        (self.on_next)(self.calls);
        self.batches.pop_front()
    }
    fn put_back(&mut self, batch: Batch) {
        self.put_back.push(batch);
    }
    fn sent(&mut self, _batch: Batch) {
        self.sent += 1;
    }
    fn before_commit(&mut self) -> bool {
        (self.on_commit)();
        true
    }
}

/// `count` records of `origin` from seq `first` on, each message naming its seq.
fn batch(origin: &str, first: u64, count: u64) -> Batch {
    let logs = (first..first + count)
        .map(|seq| SeqRecord {
            origin: origin.into(),
            seq,
            record: LogRecord::plain(format!("{origin} line {seq}"), StreamKind::Stdout, "stdout"),
        })
        .collect();
    Batch {
        logs,
        ..Batch::default()
    }
}

fn ctx() -> RunContext {
    RunContext {
        experiment_id: "e".into(),
        run_id: "r1".into(),
    }
}

fn count(server: &pg_server::PgServer, db: &str, sql: &str) -> u64 {
    server.psql(db, sql).parse().unwrap()
}

/// A spooling sink with its store in `dir`, writing to `url`.
fn spooling_sink(dir: &tempfile::TempDir, url: &str) -> SpoolingSink {
    let spool = Spool::new(SqliteStore::open(&dir.path().join("pmon.db")).unwrap());
    let pg = PostgresStore::new(url).unwrap();
    SpoolingSink::new(pg, spool, 1 << 30, RetryBackoff::default(), "spool".into())
}

/// SQL that cuts the agent's connections to `db`.
fn cut_sql(db: &str) -> String {
    format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{db}' AND application_name = 'pmon-agent'"
    )
}

/// Every one of `n` records stored once.
fn stored_once(server: &pg_server::PgServer, db: &str, n: u64) {
    assert_eq!(count(server, db, "SELECT count(*) FROM pipeline_logs"), n);
    assert_eq!(
        count(server, db, "SELECT count(DISTINCT seq) FROM pipeline_logs"),
        n
    );
}

/// A write whose connection `feed` cuts: what it hands back.
fn cut_short(sink: &mut SpoolingSink, first: Batch, feed: &mut ListFeed) -> Batch {
    match sink.write_fed(&ctx(), first, feed) {
        Fed::Unwritten(batch) => batch,
        Fed::Written(n) => panic!("{n} records written through a cut connection"),
    }
}

/// A tailed file's position: file (1, `ino`) read to `offset`.
fn position(ino: u64, offset: u64) -> crate::sink::Checkpoint {
    crate::sink::Checkpoint {
        ino,
        offset,
        ..tailed(0, 0).checkpoints.remove(0)
    }
}

/// Ships what the sink has spooled (within 30 s); returns the records left.
fn replay_all(sink: &mut SpoolingSink) -> u64 {
    sink.replay_until(std::time::Instant::now() + std::time::Duration::from_secs(30))
}

#[test]
fn a_transaction_takes_the_batches_that_follow_and_a_second_delivery_stores_nothing() {
    let (server, db) = pg_server::shared_database();
    let mut pg = PostgresStore::new(&server.url(&db)).unwrap();
    let first = batch("stdout", 0, 100);
    let more = || vec![batch("stdout", 100, 100), batch("stdout", 200, 50)];
    let mut feed = ListFeed::new(more());
    pg.write_fed(&ctx(), &first, Some(&mut feed)).unwrap();
    assert_eq!((feed.sent, feed.put_back.len()), (2, 0));
    assert_eq!(
        count(server, &db, "SELECT count(*) FROM pipeline_logs"),
        250
    );
    assert_eq!(
        server.psql(
            &db,
            "SELECT origin, first_seq, last_seq, rows FROM pipeline_batches"
        ),
        "stdout|0|249|250",
        "one ledger row: one transaction"
    );
    assert_eq!(
        count(
            server,
            &db,
            "SELECT count(DISTINCT id) FROM pipeline_logs WHERE message = 'stdout line ' || seq"
        ),
        250
    );
    // Delivered again (a replay after a crash before the spool's delete).
    let mut again = ListFeed::new(more());
    pg.write_fed(&ctx(), &first, Some(&mut again)).unwrap();
    assert_eq!(
        count(server, &db, "SELECT count(*) FROM pipeline_logs"),
        250
    );
    // Overlapping: only the new seqs land.
    let mut overlapping = ListFeed::new(vec![batch("stdout", 240, 20)]);
    pg.write_fed(&ctx(), &batch("stdout", 200, 40), Some(&mut overlapping))
        .unwrap();
    stored_once(server, &db, 260);
}

#[test]
fn a_batch_the_ledger_read_did_not_cover_waits_for_the_next_transaction() {
    let (server, db) = pg_server::shared_database();
    let mut pg = PostgresStore::new(&server.url(&db)).unwrap();
    // Another origin, and seqs below the first batch's: both unchecked.
    for unchecked in [batch("stderr", 0, 10), batch("stdout", 5, 10)] {
        let mut feed = ListFeed::new(vec![unchecked, batch("stdout", 500, 10)]);
        pg.write_fed(&ctx(), &batch("stdout", 100, 10), Some(&mut feed))
            .unwrap();
        assert_eq!((feed.sent, feed.put_back.len()), (0, 1));
        assert_eq!(feed.batches.len(), 1, "nothing taken after it");
    }
    assert_eq!(count(server, &db, "SELECT count(*) FROM pipeline_logs"), 10);
}

/// The connection is cut while the transaction takes its third batch:
/// nothing of it is stored, every batch it took comes back, and once
/// spooled and replayed each record is stored once.
#[test]
fn a_transaction_cut_short_hands_back_every_batch_it_took() {
    let (server, db) = pg_server::shared_database();
    let dir = tempfile::tempdir().unwrap();
    let mut sink = spooling_sink(&dir, &server.url(&db));
    // Connected, nothing spooled: the sink writes straight to PostgreSQL.
    sink.write(&ctx(), &batch("stdout", 0, 10)).unwrap();
    assert_eq!(sink.pending(), 0);
    let first = batch("stdout", 10, 100);
    assert!(sink.takes_more(&first));
    let cut = cut_sql(&db);
    let mut feed = ListFeed::new(vec![batch("stdout", 110, 100), batch("stdout", 210, 100)]);
    feed.on_next = Box::new(|call| {
        if call == 2 {
            server.psql("postgres", &cut);
        }
    });
    let unwritten = cut_short(&mut sink, first, &mut feed);
    let seqs: Vec<u64> = unwritten.logs.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (10..310).collect::<Vec<u64>>());
    assert_eq!(count(server, &db, "SELECT count(*) FROM pipeline_logs"), 10);
    sink.write(&ctx(), &unwritten).unwrap();
    assert_eq!(replay_all(&mut sink), 0);
    stored_once(server, &db, 310);
}

/// Spooled batches of a run are replayed in one transaction, read from the
/// spool as it goes; replayed again (a crash before the spool's delete),
/// they are stored once.
#[test]
fn a_replay_ships_consecutive_spooled_batches_in_one_transaction() {
    let (server, db) = pg_server::shared_database();
    for delivery in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(SqliteStore::open(&dir.path().join("pmon.db")).unwrap());
        for first in [0, 100, 200] {
            spool.push(&ctx(), &batch("stdout", first, 100)).unwrap();
        }
        let pg = PostgresStore::new(&server.url(&db)).unwrap();
        let mut sink =
            SpoolingSink::new(pg, spool, 1 << 30, RetryBackoff::default(), "spool".into());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        assert_eq!(sink.replay_until(deadline), 0, "delivery {delivery}");
        assert_eq!(
            count(server, &db, "SELECT count(*) FROM pipeline_logs"),
            300
        );
        assert_eq!(
            server.psql(
                &db,
                "SELECT origin, first_seq, last_seq, rows FROM pipeline_batches"
            ),
            "stdout|0|299|300",
            "one transaction, and nothing added by the second delivery"
        );
    }
}

/// `count` records of a tailed file from `first` on, with the file's read
/// position after them (a position that may not lag PostgreSQL).
fn tailed(first: u64, count: u64) -> Batch {
    let mut b = batch("file:1:2:0", first, count);
    b.checkpoints.push(crate::sink::Checkpoint {
        dev: 1,
        ino: 2,
        head: b"head".to_vec(),
        generation: 0,
        path: "/var/log/app.log".into(),
        offset: first + count,
        earlier: None,
        may_lag: false,
    });
    b
}

/// The file's read position in the local store, and the tentative ones.
fn positions(dir: &tempfile::TempDir) -> (i64, i64) {
    let db = rusqlite::Connection::open(dir.path().join("pmon.db")).unwrap();
    let offset = db
        .query_row(
            "SELECT offset FROM pmon_checkpoints WHERE ino = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let tentative = db
        .query_row("SELECT count(*) FROM pmon_checkpoints_tentative", [], |r| {
            r.get(0)
        })
        .unwrap();
    (offset, tentative)
}

/// Tailed batches go straight to PostgreSQL in one transaction, their file's
/// position stored after the commit; when the connection is cut mid-way,
/// the position stays where it was and every batch taken comes back, to be
/// spooled with its position and replayed once.
#[test]
fn tailed_batches_go_straight_and_their_position_follows_the_commit() {
    let (server, db) = pg_server::shared_database();
    let dir = tempfile::tempdir().unwrap();
    let mut sink = spooling_sink(&dir, &server.url(&db));
    sink.write(&ctx(), &tailed(0, 10)).unwrap();
    assert_eq!(sink.pending(), 0);
    let first = tailed(10, 100);
    assert!(sink.takes_more(&first));
    let mut feed = ListFeed::new(vec![tailed(110, 100), tailed(210, 100)]);
    assert!(matches!(
        sink.write_fed(&ctx(), first, &mut feed),
        Fed::Written(300)
    ));
    assert_eq!(positions(&dir), (310, 0));
    assert_eq!(
        server.psql(
            &db,
            "SELECT first_seq, last_seq, rows FROM pipeline_batches ORDER BY batch"
        ),
        "0|9|10\n10|309|300"
    );
    let cut = cut_sql(&db);
    // Cut just before the commit: the positions were stored as tentative.
    let mut feed = ListFeed::new(vec![tailed(410, 100), tailed(510, 100)]);
    feed.on_commit = Box::new(|| {
        server.psql("postgres", &cut);
    });
    let unwritten = cut_short(&mut sink, tailed(310, 100), &mut feed);
    assert_eq!(unwritten.logs.len(), 300);
    assert_eq!(
        positions(&dir),
        (310, 0),
        "no position past what PostgreSQL holds"
    );
    sink.write(&ctx(), &unwritten).unwrap();
    assert_eq!(positions(&dir), (610, 0), "spooled with the records");
    assert_eq!(
        count(server, &db, "SELECT count(*) FROM pipeline_logs"),
        310
    );
    assert_eq!(replay_all(&mut sink), 0);
    stored_once(server, &db, 610);
}

/// A tail that stopped between storing tentative positions and learning of
/// the commit: a position whose last record PostgreSQL holds is kept, one
/// whose record it does not is dropped, one with no record is kept.
#[test]
fn tentative_positions_are_settled_against_the_ledger() {
    let (server, db) = pg_server::shared_database();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("pmon.db")).unwrap();
    let spool = Spool::new(store);
    let mut pg = PostgresStore::new(&server.url(&db)).unwrap();
    pg.write(&ctx(), &batch("file:1:2:0", 0, 10)).unwrap();
    let positions = [
        (position(2, 10), Some(9)),
        (position(3, 50), Some(20)),
        (position(4, 7), None),
    ];
    spool.write_tentative(&ctx(), &positions).unwrap();
    let mut sink = SpoolingSink::new(pg, spool, 1 << 30, RetryBackoff::default(), "spool".into());
    assert_eq!(sink.settle_positions("e").unwrap(), (2, 1));
    let db = rusqlite::Connection::open(dir.path().join("pmon.db")).unwrap();
    let kept: Vec<(i64, i64)> = db
        .prepare("SELECT ino, offset FROM pmon_checkpoints ORDER BY ino")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kept, [(2, 10), (4, 7)]);
    assert_eq!(positions_left(&db), 0);
}

fn positions_left(db: &rusqlite::Connection) -> i64 {
    db.query_row("SELECT count(*) FROM pmon_checkpoints_tentative", [], |r| {
        r.get(0)
    })
    .unwrap()
}

/// PostgreSQL cannot be asked: every position that waits on it is dropped
/// (its lines are read again and land on their keys), asked about once.
#[test]
fn tentative_positions_are_dropped_when_postgresql_cannot_be_asked() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(SqliteStore::open(&dir.path().join("pmon.db")).unwrap());
    let positions = [
        (position(2, 10), Some(9)),
        (position(3, 50), Some(20)),
        (position(4, 7), None),
    ];
    spool.write_tentative(&ctx(), &positions).unwrap();
    let port = pg_server::free_port();
    let pg = PostgresStore::new(&format!("postgres://postgres@127.0.0.1:{port}/none")).unwrap();
    let mut sink = SpoolingSink::new(pg, spool, 1 << 30, RetryBackoff::default(), "spool".into());
    assert_eq!(sink.settle_positions("e").unwrap(), (1, 2));
    let db = rusqlite::Connection::open(dir.path().join("pmon.db")).unwrap();
    assert_eq!(positions_left(&db), 0);
}
