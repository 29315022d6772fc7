//! The run lifecycle of one repository actor, tested in isolation: the actor is spawned alone
//! (no supervisor, no doors) over a temporary store and directory with real shell actions, and
//! watched through its replies and through a test subscriber of the notices, which stands for
//! any second door: it records every notice of a run without the core knowing of it.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef, call};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::sync::broadcast::Receiver;

use super::{Repo, RepoArgs, RepoMsg};
use crate::actors::notice::Notice;
use crate::actors::{Listeners, Shared};
use crate::config::Config;
use crate::store::{JobState, Origin, RunRecord, RunState, Store};

/// One repository actor over a temporary directory, and a subscriber of its notices.
struct Bench {
    /// Keeps the directory alive.
    _dir: tempfile::TempDir,
    /// What it was started with.
    shared: Shared,
    /// The repository directory.
    repo_dir: std::path::PathBuf,
    /// The actor.
    actor: ActorRef<RepoMsg>,
    /// Its task.
    handle: tokio::task::JoinHandle<()>,
    /// The test subscriber.
    notices: Receiver<Arc<Notice>>,
}

const SCHEMA: &str = "port: {type: int, default: 1}\n";

/// A repository with actor template `node` whose actions are the given shell scripts, and a
/// blueprint of `count` node services executed into it.
async fn bench(actions: &[(&str, &str)], count: usize) -> Bench {
    bench_with(actions, count, "actions:\n  - action: install\n", None, "").await
}

/// [`bench`] with the blueprint's `actions:` part, the template's `config.yaml` and more
/// `[ays]` config given.
async fn bench_with(
    actions: &[(&str, &str)],
    count: usize,
    blueprint_actions: &str,
    config_yaml: Option<&str>,
    ays_config: &str,
) -> Bench {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::parse(&format!(
        "[storage]\npath = {:?}\n[mode]\nprod = false\n[ays]\n{ays_config}\n",
        dir.path().join("data").display().to_string()
    ))
    .expect("config");
    let store = Store::open(&config.storage.path).expect("store");
    let shared = Shared::new(config, store, Listeners::default());
    let repo_dir = dir.path().join("repo");
    let actions_dir = repo_dir.join("actorTemplates/node/actions");
    std::fs::create_dir_all(&actions_dir).expect("dirs");
    std::fs::write(repo_dir.join("actorTemplates/node/schema.yaml"), SCHEMA).expect("schema");
    if let Some(text) = config_yaml {
        std::fs::write(repo_dir.join("actorTemplates/node/config.yaml"), text).expect("config");
    }
    for (name, script) in actions {
        let path = actions_dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("action");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let notices = shared.notices.subscribe();
    let (actor, handle) = spawn(&shared, &repo_dir).await;
    let mut blueprint = String::new();
    for i in 0..count {
        blueprint.push_str(&format!("node__n{i}:\n  port: {i}\n"));
    }
    blueprint.push_str(blueprint_actions);
    call!(actor, |reply| RepoMsg::PutBlueprint {
        name: "b.yaml".into(),
        content: blueprint,
        create: true,
        audit: None,
        reply
    })
    .expect("call")
    .expect("blueprint");
    call!(actor, |reply| RepoMsg::ExecuteBlueprint {
        name: "b.yaml".into(),
        audit: None,
        reply
    })
    .expect("call")
    .expect("executed");
    Bench {
        _dir: dir,
        shared,
        repo_dir,
        actor,
        handle,
        notices,
    }
}

async fn spawn(
    shared: &Shared,
    dir: &std::path::Path,
) -> (ActorRef<RepoMsg>, tokio::task::JoinHandle<()>) {
    let args = RepoArgs {
        shared: shared.clone(),
        name: "demo".into(),
        dir: dir.to_path_buf(),
        workers: Arc::new(Semaphore::new(4)),
    };
    Actor::spawn(None, Repo, args).await.expect("spawn")
}

impl Bench {
    async fn create_run(&self) -> RunRecord {
        call!(self.actor, |reply| RepoMsg::CreateRun {
            simulate: false,
            callback_url: None,
            origin: Origin::Api,
            audit: None,
            reply
        })
        .expect("call")
        .expect("run")
    }

    async fn run(&self, key: &str) -> RunRecord {
        call!(self.actor, |reply| RepoMsg::GetRun {
            key: key.to_string(),
            reply
        })
        .expect("call")
        .expect("found")
    }

    /// The notices until the end of run `key`, in order.
    async fn notices_until_end_of(&mut self, key: &str) -> Vec<Notice> {
        let mut seen = Vec::new();
        loop {
            let notice = tokio::time::timeout(Duration::from_secs(20), self.notices.recv())
                .await
                .expect("a notice in time")
                .expect("subscribed");
            let end = matches!(&*notice, Notice::RunEnded { run, .. } if run == key);
            seen.push((*notice).clone());
            if end {
                return seen;
            }
        }
    }
}

#[tokio::test]
async fn a_run_goes_new_running_ok_and_a_subscriber_hears_all_of_it() {
    let mut bench = bench(&[("install", "echo installed")], 2).await;
    let run = bench.create_run().await;
    assert_eq!(run.state, RunState::Running);
    assert_eq!(run.steps.len(), 1);
    let notices = bench.notices_until_end_of(&run.key).await;
    assert!(matches!(
        &notices[0],
        Notice::RunStarted { run: r, origin: Origin::Api, .. } if *r == run.key
    ));
    let jobs: Vec<_> = notices
        .iter()
        .filter_map(|n| match n {
            Notice::JobEnded { service, state, .. } => Some((service.clone(), *state)),
            _ => None,
        })
        .collect();
    assert_eq!(jobs.len(), 2, "{notices:?}");
    assert!(jobs.iter().all(|(_, state)| *state == JobState::Ok));
    assert!(matches!(
        notices.last(),
        Some(Notice::RunEnded {
            state: RunState::Ok,
            error: None,
            origin: Origin::Api,
            ..
        })
    ));
    let stored = bench.run(&run.key).await;
    assert_eq!(stored.state, RunState::Ok);
    assert!(stored.ended.is_some());
    let job = &stored.steps[0].jobs[0];
    assert_eq!(job.state, JobState::Ok);
    assert_eq!(job.logs[0].log, "installed");
}

#[tokio::test]
async fn a_failed_step_ends_the_run_in_error_with_its_reason() {
    let mut bench = bench(&[("install", "echo broken >&2; exit 3")], 1).await;
    let run = bench.create_run().await;
    let notices = bench.notices_until_end_of(&run.key).await;
    let Some(Notice::RunEnded { state, error, .. }) = notices.last() else {
        panic!("no end: {notices:?}");
    };
    assert_eq!(*state, RunState::Error);
    assert_eq!(error.as_deref(), Some("step 1 had 1 failed job(s)"));
    let stored = bench.run(&run.key).await;
    assert_eq!(stored.state, RunState::Error);
    assert_eq!(stored.steps[0].jobs[0].state, JobState::Error);
    // The failed action is planned again by the next run.
    let again = bench.create_run().await;
    assert_eq!(again.steps[0].jobs[0].action_name, "install");
}

#[tokio::test]
async fn a_run_cut_short_by_a_crash_is_marked_interrupted_and_queued_again_by_the_next_actor() {
    let bench = bench(&[("install", "sleep 30")], 1).await;
    let run = bench.create_run().await;
    // Wait until the job runs, then crash the actor mid-run.
    for _ in 0..200 {
        if bench.run(&run.key).await.steps[0].jobs[0].state == JobState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bench.actor.cast(RepoMsg::Crash).expect("cast");
    let _ = bench.handle.await;
    let (actor, handle) = spawn(&bench.shared, &bench.repo_dir).await;
    let stored = call!(actor, |reply| RepoMsg::GetRun {
        key: run.key.clone(),
        reply
    })
    .expect("call")
    .expect("found");
    assert_eq!(stored.state, RunState::Error);
    assert!(
        stored
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("interrupted")),
        "{stored:?}"
    );
    assert_eq!(stored.steps[0].jobs[0].state, JobState::Error);
    // Its unfinished job is queued again as a new run (at least once), which starts.
    let again = stored
        .error
        .as_deref()
        .and_then(|e| e.rsplit_once("queued again as run "))
        .map(|(_, key)| key.to_string())
        .expect("the error names the new run");
    let mut started = None;
    for _ in 0..200 {
        let run = call!(actor, |reply| RepoMsg::GetRun {
            key: again.clone(),
            reply
        })
        .expect("call")
        .expect("found");
        if run.state == RunState::Running {
            started = Some(run);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let started = started.expect("the run queued again starts");
    assert_eq!(started.again_of.as_deref(), Some(run.key.as_str()));
    assert_eq!(started.attempt, 2);
    assert_eq!(started.steps[0].jobs[0].action_name, "install");
    actor.stop(None);
    let _ = handle.await;
}

/// True while process `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn a_crash_before_the_job_group_was_stored_still_kills_the_action_at_the_next_start() {
    // The crash test (bench/crash.py) found a second copy of an action running beside the first:
    // the server was killed after spawning a job and before storing its process group. The
    // action's child leaves its group (`setsid`), so only its environment tells whose it is.
    let bench = bench(
        &[(
            "install",
            "setsid sleep 30 &\necho $! > \"$COCKPIT_DATA/sleeper.tmp\"\nmv \"$COCKPIT_DATA/sleeper.tmp\" \"$COCKPIT_DATA/sleeper\"\nwait",
        )],
        1,
    )
    .await;
    let run = bench.create_run().await;
    let pid_file = bench.shared.config.storage.path.join("sleeper");
    let mut sleeper = None;
    for _ in 0..400 {
        let job = &bench.run(&run.key).await.steps[0].jobs[0];
        if job.state == JobState::Running
            && let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
        {
            sleeper = Some((pid, job.key.clone()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (pid, job) = sleeper.expect("the action runs");
    // What the store holds when the crash came before the group was recorded.
    bench.shared.store.set_job_group(&job, 0).expect("store");
    bench.actor.cast(RepoMsg::Crash).expect("cast");
    let _ = bench.handle.await;
    assert!(alive(pid), "the action outlives its actor");
    let (actor, handle) = spawn(&bench.shared, &bench.repo_dir).await;
    let mut gone = false;
    for _ in 0..200 {
        if !alive(pid) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(gone, "the interrupted run's action was killed at start");
    actor.stop(None);
    let _ = handle.await;
}

#[tokio::test]
async fn a_blueprint_is_checked_against_the_templates_without_changing_anything() {
    let bench = bench(&[("install", "true")], 1).await;
    let problems = call!(bench.actor, |reply| RepoMsg::CheckBlueprint {
        name: "new.yaml".into(),
        content: "node__n0:\n  port: 9\nnope__x:\n".into(),
        reply
    })
    .expect("call")
    .expect("checked");
    assert!(
        problems.iter().any(|p| p.contains("unknown actor")),
        "{problems:?}"
    );
    let problems = call!(bench.actor, |reply| RepoMsg::CheckBlueprint {
        name: "new.yaml".into(),
        content: "node__n0:\n  port: 9\nnode__n1:\n".into(),
        reply
    })
    .expect("call")
    .expect("checked");
    assert_eq!(problems, Vec::<String>::new());
    // Nothing was applied: n0 keeps its port, n1 does not exist.
    let services = bench.shared.store.services("demo").expect("services");
    assert_eq!(services.len(), 1, "{services:?}");
    assert!(services[0].1.contains("\"port\":0"), "{services:?}");
}

#[tokio::test]
async fn an_event_during_a_run_is_queued_and_runs_after_it() {
    let mut bench = bench(&[("install", "sleep 0.3; echo done"), ("report", "cat")], 1).await;
    // Subscribe the service's `report` action to `email` through its template's config.
    std::fs::write(
        bench.repo_dir.join("actorTemplates/node/config.yaml"),
        "events: [{channel: email, actions: [report]}]\n",
    )
    .expect("config");
    call!(bench.actor, |reply| RepoMsg::ExecuteBlueprint {
        name: "b.yaml".into(),
        audit: None,
        reply
    })
    .expect("call")
    .expect("executed");
    let first = bench.create_run().await;
    // The event's preparation runs once, and only for a channel an action subscribes to.
    let prepared = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = prepared.clone();
    let before_run = crate::actors::event::BeforeRun::new(move || {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    });
    let ignored = call!(bench.actor, |reply| RepoMsg::Event {
        channel: "nobody-listens".into(),
        payload: json!({}),
        before_run: Some(before_run.clone()),
        reply
    })
    .expect("call");
    assert_eq!(ignored, 0);
    assert_eq!(prepared.load(std::sync::atomic::Ordering::SeqCst), 0);
    let queued = call!(bench.actor, |reply| RepoMsg::Event {
        channel: "email".into(),
        payload: json!({"subject": "hi"}),
        before_run: Some(before_run.clone()),
        reply
    })
    .expect("call");
    assert_eq!(queued, 1);
    assert_eq!(prepared.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        before_run.run(),
        Ok(()),
        "later calls get the first outcome"
    );
    assert_eq!(prepared.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The event's run waits, recorded `new`, while the first one runs.
    let runs = call!(bench.actor, |reply| RepoMsg::ListRuns { reply })
        .expect("call")
        .expect("runs");
    let waiting = runs
        .iter()
        .find(|r| r.key != first.key)
        .expect("the queued run")
        .clone();
    assert_eq!(waiting.state, RunState::New);
    assert_eq!(
        waiting.origin,
        Origin::Event {
            channel: "email".into()
        }
    );
    let notices = bench.notices_until_end_of(&waiting.key).await;
    let order: Vec<String> = notices
        .iter()
        .filter_map(|n| match n {
            Notice::RunStarted { run, .. } => Some(format!("start {run}")),
            Notice::RunEnded { run, state, .. } => Some(format!("end {run} {state}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        vec![
            format!("start {}", first.key),
            format!("end {} ok", first.key),
            format!("start {}", waiting.key),
            format!("end {} ok", waiting.key),
        ],
        "{notices:?}"
    );
    let done = bench.run(&waiting.key).await;
    let job = &done.steps[0].jobs[0];
    assert_eq!(job.action_name, "report");
    assert!(
        job.logs
            .iter()
            .any(|l| l.log.contains("\"subject\":\"hi\"")),
        "{job:?}"
    );
}

impl Bench {
    /// Delivers a tick now (the interval's own ticks may come later; a tick is idempotent).
    async fn tick(&self) {
        self.actor.cast(RepoMsg::Tick).expect("cast");
        // A call after the cast: the tick has been handled when it returns.
        let _ = call!(self.actor, |reply| RepoMsg::ListRuns { reply }).expect("call");
    }

    /// Moves the paused clock on by `secs` and ticks.
    async fn advance(&self, secs: u64) {
        tokio::time::advance(Duration::from_secs(secs)).await;
        self.tick().await;
    }

    /// The runs, oldest first.
    async fn runs(&self) -> Vec<RunRecord> {
        let mut runs = call!(self.actor, |reply| RepoMsg::ListRuns { reply })
            .expect("call")
            .expect("runs");
        runs.reverse();
        runs
    }

    /// Lets the run in progress finish in real time (its process runs outside tokio's clock),
    /// then pauses the clock again.
    async fn finish_runs(&mut self) {
        tokio::time::resume();
        loop {
            let busy = self
                .runs()
                .await
                .iter()
                .any(|r| matches!(r.state, RunState::New | RunState::Running));
            if !busy {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_secs(20), self.notices.recv())
                .await
                .expect("a notice in time");
        }
        tokio::time::pause();
    }

    /// Stops the actor as a shutdown does.
    async fn stop(&mut self) {
        self.actor.stop(None);
        let handle = std::mem::replace(&mut self.handle, tokio::spawn(async {}));
        let _ = handle.await;
    }

    /// Starts the repository's actor again over the same store (a restart).
    async fn restart(&mut self) {
        let (actor, handle) = spawn(&self.shared, &self.repo_dir).await;
        self.actor = actor;
        self.handle = handle;
    }
}

/// How many runs the schedule started.
fn scheduled(runs: &[RunRecord]) -> usize {
    runs.iter().filter(|r| r.origin == Origin::Schedule).count()
}

#[tokio::test(start_paused = true)]
async fn a_period_survives_restarts_without_a_reset_or_a_double_run_and_a_missed_slot_runs_once() {
    let mut bench = bench_with(
        &[("install", "true"), ("check", "echo checked")],
        1,
        "actions:\n  - {action: check, recurring: 1h}\n",
        None,
        "",
    )
    .await;
    bench.tick().await; // first seen: due one period from now
    bench.advance(3599).await;
    assert_eq!(
        scheduled(&bench.runs().await),
        0,
        "not due before its period"
    );
    bench.advance(2).await;
    bench.finish_runs().await;
    assert_eq!(scheduled(&bench.runs().await), 1);
    // A restart 30 minutes later neither fires it again nor resets the period.
    bench.advance(1800).await;
    bench.stop().await;
    bench.restart().await;
    bench.tick().await;
    assert_eq!(
        scheduled(&bench.runs().await),
        1,
        "no double run after a restart"
    );
    bench.advance(1799).await;
    assert_eq!(
        scheduled(&bench.runs().await),
        2,
        "due on the hour, not reset"
    );
    bench.finish_runs().await;
    // Down for three slots: the missed slot runs once at start, then the period goes on.
    bench.stop().await;
    tokio::time::advance(Duration::from_secs(3 * 3600 + 600)).await;
    bench.restart().await;
    bench.tick().await;
    bench.finish_runs().await;
    bench.tick().await;
    assert_eq!(scheduled(&bench.runs().await), 3, "missed slots run once");
    bench.advance(2400).await;
    assert_eq!(
        scheduled(&bench.runs().await),
        3,
        "next slot is on the original phase"
    );
    bench.advance(1200).await;
    bench.finish_runs().await;
    assert_eq!(scheduled(&bench.runs().await), 4);
    let stored = bench.shared.store.recurring("demo").expect("slots");
    let slot = &stored[&("node!n0".to_string(), "check".to_string())];
    assert_eq!(slot.spec.as_deref(), Some("every 3600s"));
    assert_eq!(slot.next_ms.map(|n| n - slot.last_ms > 0), Some(true));
}

#[tokio::test(start_paused = true)]
async fn a_cron_schedule_in_a_time_zone_fires_at_its_slots_across_restarts() {
    // Minute 15 in Kolkata (UTC+05:30) is minute 45 in UTC.
    let mut bench = bench_with(
        &[("install", "true"), ("check", "echo checked")],
        1,
        "actions:\n  - {action: check, recurring: {cron: '15 * * * *', tz: Asia/Kolkata}}\n",
        None,
        "run_missed = false",
    )
    .await;
    bench.tick().await;
    let now = crate::clock::now_ms();
    let hour = 3_600_000;
    let slot = (now - 45 * 60_000).div_euclid(hour) * hour + hour + 45 * 60_000;
    let wait = ((slot - now) / 1000) as u64;
    bench.advance(wait.saturating_sub(1)).await;
    assert_eq!(scheduled(&bench.runs().await), 0, "not before its slot");
    bench.advance(2).await;
    bench.finish_runs().await;
    assert_eq!(scheduled(&bench.runs().await), 1, "at :45 UTC");
    bench.stop().await;
    bench.restart().await;
    bench.tick().await;
    assert_eq!(
        scheduled(&bench.runs().await),
        1,
        "no double run after a restart"
    );
    // Down across two slots with run_missed = false: skipped, and the next slot runs.
    bench.stop().await;
    tokio::time::advance(Duration::from_secs(2 * 3600)).await;
    bench.restart().await;
    bench.tick().await;
    assert_eq!(scheduled(&bench.runs().await), 1, "missed slots skipped");
    bench.advance(3600).await;
    bench.finish_runs().await;
    assert_eq!(scheduled(&bench.runs().await), 2);
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_then_stop_until_a_person_runs_the_action() {
    let mut bench = bench_with(
        &[("install", "echo attempt; exit 1")],
        1,
        "actions:\n  - action: install\n",
        Some("actions:\n  install: {retries: 3, retry_delay: 10s, retry_max_delay: 30s}\n"),
        "",
    )
    .await;
    bench.create_run().await;
    bench.finish_runs().await;
    // Delays 10 s, 20 s, then 40 s capped at 30 s.
    for (attempt, delay) in [(2, 10), (3, 20), (4, 30)] {
        bench.advance(delay - 1).await;
        assert_eq!(
            bench.runs().await.len(),
            attempt - 1,
            "attempt {attempt} waits {delay}s"
        );
        bench.advance(1).await;
        bench.finish_runs().await;
        assert_eq!(
            bench.runs().await.len(),
            attempt,
            "attempt {attempt} after {delay}s"
        );
    }
    // Exhausted: no more runs however long the ticks go on.
    for _ in 0..4 {
        bench.advance(3600).await;
    }
    let runs = bench.runs().await;
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|r| r.state == RunState::Error), "{runs:?}");
    // Creation times are whole seconds: each gap is its delay, or a second more.
    let gaps: Vec<i64> = runs
        .windows(2)
        .map(|w| w[1].created - w[0].created)
        .collect();
    for (gap, delay) in gaps.iter().zip([10, 20, 30]) {
        assert!((delay..=delay + 1).contains(gap), "{gaps:?}");
    }
    let retries = bench.shared.store.retries("demo").expect("retries");
    assert_eq!((retries[0].failures, retries[0].next_ms), (4, None));
    // A person runs it: it runs, fails, and has its three retries again.
    bench.create_run().await;
    bench.finish_runs().await;
    let retries = bench.shared.store.retries("demo").expect("retries");
    assert_eq!(retries[0].failures, 1);
    assert!(retries[0].next_ms.is_some());
}

#[tokio::test(start_paused = true)]
async fn runs_older_than_keep_days_are_pruned_with_their_jobs_and_logs() {
    let mut bench = bench_with(
        &[("install", "echo installed")],
        1,
        "actions:\n  - action: install\n",
        None,
        "keep_days = 2",
    )
    .await;
    bench.create_run().await;
    bench.finish_runs().await;
    let old = bench.runs().await[0].key.clone();
    // A day later, another run.
    bench.advance(86_400).await;
    call!(bench.actor, |reply| RepoMsg::ScheduleAction {
        role: "node".into(),
        name: "n0".into(),
        action: "install".into(),
        args: None,
        audit: None,
        reply
    })
    .expect("call")
    .expect("scheduled");
    let recent = bench.create_run().await.key;
    bench.finish_runs().await;
    // Down for two days less an hour: at start the first is older than two days, the other not.
    bench.stop().await;
    tokio::time::advance(Duration::from_secs(2 * 86_400 - 3600)).await;
    bench.restart().await;
    bench.tick().await;
    let keys: Vec<String> = bench.runs().await.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys, [recent], "the old run pruned, the recent one kept");
    assert!(
        bench
            .shared
            .store
            .run_logs(&old, 0, 100)
            .expect("logs")
            .is_empty()
    );
}
