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
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::parse(&format!(
        "[storage]\npath = {:?}\n[mode]\nprod = false\n",
        dir.path().join("data").display().to_string()
    ))
    .expect("config");
    let store = Store::open(&config.storage.path).expect("store");
    let shared = Shared::new(config, store, Listeners::default());
    let repo_dir = dir.path().join("repo");
    let actions_dir = repo_dir.join("actorTemplates/node/actions");
    std::fs::create_dir_all(&actions_dir).expect("dirs");
    std::fs::write(repo_dir.join("actorTemplates/node/schema.yaml"), SCHEMA).expect("schema");
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
    blueprint.push_str("actions:\n  - action: install\n");
    call!(actor, |reply| RepoMsg::PutBlueprint {
        name: "b.yaml".into(),
        content: blueprint,
        create: true,
        reply
    })
    .expect("call")
    .expect("blueprint");
    call!(actor, |reply| RepoMsg::ExecuteBlueprint {
        name: "b.yaml".into(),
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
async fn a_run_cut_short_by_a_crash_is_marked_interrupted_by_the_next_actor() {
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
    // The repository is free again.
    let next = call!(actor, |reply| RepoMsg::CreateRun {
        simulate: true,
        callback_url: None,
        origin: Origin::Api,
        reply
    })
    .expect("call");
    assert!(next.is_ok(), "{next:?}");
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
        reply
    })
    .expect("call")
    .expect("executed");
    let first = bench.create_run().await;
    let queued = call!(bench.actor, |reply| RepoMsg::Event {
        channel: "email".into(),
        payload: json!({"subject": "hi"}),
        reply
    })
    .expect("call");
    assert_eq!(queued, 1);
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
