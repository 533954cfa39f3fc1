//! Which experiment and which of its runs a query is about.
//!
//! Users name an experiment and, optionally, a run: by ordinal (`--run 2`), by
//! run id (or an unambiguous prefix of one), or `--run all`; without `--run`
//! they mean the latest run. Mistakes are answered with what does exist, so
//! the next attempt can succeed.

use super::db::{QueryDb, Store};
use super::filter::LogFilter;
use crate::app::App;
use anyhow::bail;
use pmon_core::run::Run;

/// What `--run` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunChoice {
    /// No `--run`: the most recent run.
    Latest,
    /// `--run all`: every run of the experiment.
    All,
    /// `--run 3`: the third run started.
    Ordinal(i64),
    /// `--run 01J…`: a run id or a prefix of one.
    Id(String),
}

impl RunChoice {
    pub fn parse(arg: Option<&str>) -> RunChoice {
        let Some(text) = arg.map(str::trim) else {
            return RunChoice::Latest;
        };
        if text.eq_ignore_ascii_case("all") {
            return RunChoice::All;
        }
        match text.parse::<i64>() {
            Ok(ordinal) => RunChoice::Ordinal(ordinal),
            Err(_) => RunChoice::Id(text.to_string()),
        }
    }
}

/// The runs a query covers: one of them, or all of them.
#[derive(Debug, Clone, Copy)]
pub enum RunScope<'a> {
    One(&'a Run),
    All,
}

/// An experiment known to the store and its runs. Only [`Experiment::load`]
/// makes one, and it refuses experiments without runs: the latest run is kept
/// apart so that there always is one, without a check at every use.
#[derive(Debug, Clone)]
pub struct Experiment {
    name: String,
    /// Every run but the latest, oldest first.
    earlier: Vec<Run>,
    latest: Run,
}

impl Experiment {
    /// Loads the experiment's runs, runs whose agent died shown as `lost`
    /// (see [`QueryDb::runs_of`]) so that a crashed agent never shows as
    /// `running` forever.
    pub fn load(db: &mut QueryDb<'_>, name: &str) -> anyhow::Result<Experiment> {
        let mut earlier = db.runs_of(name)?;
        let Some(latest) = earlier.pop() else {
            let known = db.experiments()?;
            return Err(no_such_experiment(name, &known, &db.location()));
        };
        Ok(Experiment {
            name: name.to_string(),
            earlier,
            latest,
        })
    }

    /// The run `--run` names, or all runs.
    pub fn pick(&self, choice: &RunChoice) -> anyhow::Result<RunScope<'_>> {
        match choice {
            RunChoice::All => Ok(RunScope::All),
            RunChoice::Latest => Ok(RunScope::One(self.latest())),
            RunChoice::Ordinal(ordinal) => self.by_ordinal(*ordinal).map(RunScope::One),
            RunChoice::Id(id) => self.by_id(id).map(RunScope::One),
        }
    }

    /// Like [`Experiment::pick`], for commands that describe exactly one run.
    pub fn pick_one(&self, choice: &RunChoice, command: &str) -> anyhow::Result<&Run> {
        match self.pick(choice)? {
            RunScope::One(run) => Ok(run),
            RunScope::All => bail!(
                "'{command}' describes one run, so --run all does not fit; pass --run N or a run id ({})",
                self.ordinal_range()
            ),
        }
    }

    /// The log filter of this experiment's runs in `scope`.
    pub fn log_filter(&self, scope: RunScope<'_>) -> LogFilter {
        LogFilter {
            experiment: self.name().to_string(),
            run_id: match scope {
                RunScope::One(run) => Some(run.run_id.clone()),
                RunScope::All => None,
            },
            ..LogFilter::default()
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> impl Iterator<Item = &Run> {
        self.earlier.iter().chain(std::iter::once(&self.latest))
    }

    pub fn latest(&self) -> &Run {
        &self.latest
    }

    fn by_ordinal(&self, ordinal: i64) -> anyhow::Result<&Run> {
        match self.runs().find(|r| r.ordinal == ordinal) {
            Some(run) => Ok(run),
            None => bail!(
                "experiment '{}' has no run {ordinal}; {}; pass --run N, a run id, or --run all",
                self.name,
                self.ordinal_range()
            ),
        }
    }

    fn by_id(&self, id: &str) -> anyhow::Result<&Run> {
        if let Some(run) = self.runs().find(|r| r.run_id.eq_ignore_ascii_case(id)) {
            return Ok(run);
        }
        let prefix = id.to_ascii_uppercase();
        let matches: Vec<&Run> = self
            .runs()
            .filter(|r| !id.is_empty() && r.run_id.to_ascii_uppercase().starts_with(&prefix))
            .collect();
        match matches.as_slice() {
            [run] => Ok(run),
            [] => bail!(
                "experiment '{}' has no run '{id}'; {}; pass --run N, a run id, or --run all",
                self.name,
                self.ordinal_range()
            ),
            several => bail!(
                "'{id}' could be any of runs {} of experiment '{}'; give more of the run id or its number",
                several.iter().map(|r| r.ordinal.to_string()).collect::<Vec<_>>().join(", "),
                self.name
            ),
        }
    }

    /// `its runs are 1 to 3`, or `it has only run 1`.
    fn ordinal_range(&self) -> String {
        let first = self.runs().next().map_or(1, |r| r.ordinal);
        let last = self.latest().ordinal;
        if first == last {
            format!("it has only run {first}")
        } else {
            format!("its runs are {first} to {last}")
        }
    }
}

/// Opens the store and loads the experiment.
pub fn open_experiment(app: &App, name: &str) -> anyhow::Result<(Store, Experiment)> {
    let mut store = open_store_of(app, name)?;
    let experiment = Experiment::load(&mut store.db(), name)?;
    Ok((store, experiment))
}

/// Opens the store that should hold the experiment; a missing embedded store
/// is reported as "nothing recorded yet" rather than as a file error.
pub fn open_store_of(app: &App, name: &str) -> anyhow::Result<Store> {
    match Store::open(app)? {
        Some(store) => Ok(store),
        None => Err(no_such_experiment(
            name,
            &[],
            &app.data_dir.root().display().to_string(),
        )),
    }
}

/// The error for an experiment with no runs, listing the ones that exist.
/// `location` says where we looked: the data dir, or PostgreSQL and its URL.
pub fn no_such_experiment(name: &str, known: &[String], location: &str) -> anyhow::Error {
    if known.is_empty() {
        anyhow::anyhow!(
            "no experiment named '{name}'; nothing has been recorded yet in {location}; run pmon-agent wrap -e {name} -- CMD first"
        )
    } else {
        anyhow::anyhow!(
            "no experiment named '{name}'; known experiments: {}",
            known.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::tests::{insert_run, temp_store};
    use pmon_core::procinfo;

    fn load(conn: &rusqlite::Connection, name: &str) -> anyhow::Result<Experiment> {
        Experiment::load(&mut QueryDb::Sqlite(conn), name)
    }

    #[test]
    fn run_choices_parse_ordinals_ids_and_all() {
        assert_eq!(RunChoice::parse(None), RunChoice::Latest);
        assert_eq!(RunChoice::parse(Some("all")), RunChoice::All);
        assert_eq!(RunChoice::parse(Some("2")), RunChoice::Ordinal(2));
        assert_eq!(
            RunChoice::parse(Some("01JABC")),
            RunChoice::Id("01JABC".into())
        );
    }

    #[test]
    fn an_unknown_experiment_lists_the_known_ones() {
        let (_dir, store) = temp_store();
        insert_run(store.conn(), "alpha", 1, "RUNA", "succeeded");
        insert_run(store.conn(), "beta", 1, "RUNB", "failed");
        let err = load(store.conn(), "gamma").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no experiment named 'gamma'; known experiments: alpha, beta"
        );
    }

    #[test]
    fn an_empty_store_says_how_to_record_something() {
        let (_dir, store) = temp_store();
        let err = load(store.conn(), "x").unwrap_err().to_string();
        assert!(
            err.starts_with("no experiment named 'x'; nothing has been recorded yet in "),
            "{err}"
        );
        assert!(
            err.ends_with("run pmon-agent wrap -e x -- CMD first"),
            "{err}"
        );
    }

    #[test]
    fn runs_are_picked_by_ordinal_id_prefix_or_latest() {
        let (_dir, store) = temp_store();
        insert_run(store.conn(), "x", 1, "01AAAA", "succeeded");
        insert_run(store.conn(), "x", 2, "01ABBB", "failed");
        let exp = load(store.conn(), "x").unwrap();
        let id_of = |choice: RunChoice| exp.pick_one(&choice, "status").unwrap().run_id.clone();
        assert_eq!(id_of(RunChoice::Latest), "01ABBB");
        assert_eq!(id_of(RunChoice::Ordinal(1)), "01AAAA");
        assert_eq!(id_of(RunChoice::Id("01aaaa".into())), "01AAAA");
        assert_eq!(id_of(RunChoice::Id("01AB".into())), "01ABBB");
        let ambiguous = exp
            .pick(&RunChoice::Id("01A".into()))
            .unwrap_err()
            .to_string();
        assert!(ambiguous.contains("runs 1, 2"), "{ambiguous}");
        let missing = exp.pick(&RunChoice::Ordinal(7)).unwrap_err().to_string();
        assert!(
            missing.contains("has no run 7; its runs are 1 to 2"),
            "{missing}"
        );
        assert!(matches!(exp.pick(&RunChoice::All).unwrap(), RunScope::All));
        assert!(exp.pick_one(&RunChoice::All, "status").is_err());
    }

    #[test]
    fn a_running_run_whose_agent_is_gone_is_shown_lost() {
        let (_dir, store) = temp_store();
        insert_run(store.conn(), "x", 1, "R1", "running");
        store
            .conn()
            .execute(
                "UPDATE pipeline_runs SET host = ?1, agent_pid = ?2",
                rusqlite::params![procinfo::hostname(), u32::MAX - 1],
            )
            .unwrap();
        let exp = load(store.conn(), "x").unwrap();
        assert_eq!(exp.latest().state, pmon_core::run::RunState::Lost);
    }
}
