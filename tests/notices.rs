//! Failure notices against the real binary: a run that fails (here a scheduled one) is told to
//! the chats that asked with `/notify on <repo>` (the strict fake Bot API) and POSTed, signed, to
//! the webhooks of `[notify]` (a receiver that checks the HMAC itself); a receiver that fails is
//! retried with backoff, and an undelivered notice survives `kill -9`.

mod support;

use std::time::Duration;

use serde_json::json;
use support::api::{Api, repo_path, template};
use support::fake_itsyou::FakeItsYou;
use support::fake_telegram::FakeTelegram;
use support::webhook_receiver::Receiver;
use support::{Cockpit, base_config, eventually};

const BOT_TOKEN: &str = "434343:BOT-token-SECRET-never-logged";
const HOOK_SECRET: &str = "hook-s3cr3t-VALUE";
const WAIT: Duration = Duration::from_secs(30);

/// `[notify]` with one webhook and short retry delays.
fn notify_config(receiver: &Receiver, retry_min_ms: u64) -> String {
    format!(
        "[notify]\nwebhooks = [{{url = \"{}\", secret = \"{}\"}}]\nretry_min_ms = {retry_min_ms}\n\
         retry_max_ms = {}\ntimeout_ms = 2000\n",
        receiver.url,
        receiver.secret,
        retry_min_ms * 4
    )
}

/// Creates repository `repo` with one `node__a` service whose action `check` fails; `config`
/// is the template's `config.yaml`. With `install`, that action is scheduled too.
async fn failing_repository(api: &Api, repo: &str, config: &str) {
    let (status, view) = api.post("", json!({"name": repo})).await;
    assert_eq!(status, 201, "{view}");
    let dir = repo_path(&view);
    template(
        &dir,
        "node",
        "",
        &[("check", "echo checking; echo 'disk full' >&2; exit 3")],
    );
    std::fs::write(dir.join("actorTemplates/node/config.yaml"), config).expect("config.yaml");
    let blueprint = "node__a: {}\n";
    let path = format!("/{repo}/blueprint");
    let (status, body) = api
        .post(&path, json!({"name": "b.yaml", "content": blueprint}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.post(&format!("{path}/b.yaml"), json!({})).await;
    assert_eq!(status, 200, "{body}");
}

/// The real binary with a bot (fake Bot API and ItsYou.online) and `extra` config; chat `chat`
/// logged in.
async fn bot_world(extra: &str, chat: i64) -> (FakeTelegram, FakeItsYou, Cockpit) {
    let telegram = FakeTelegram::start(BOT_TOKEN).await;
    let itsyou = FakeItsYou::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = base_config(dir.path()).replacen(
        "[oauth]\n",
        &format!("[oauth]\nitsyouonlinehost = \"{}\"\n", itsyou.url),
        1,
    ) + &format!(
        "[bot]\ntoken = \"{BOT_TOKEN}\"\napi_url = \"{}\"\n\n{extra}",
        telegram.url,
    );
    let cockpit = Cockpit::start_in(dir, &text);
    telegram.send_text(chat, "/start");
    let link = telegram.wait_text(chat, "/v1/oauth/authorize", WAIT).await;
    let link = link
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .expect("a link");
    let url = reqwest::Url::parse(link).expect("link");
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let page = reqwest::Client::new()
        .get(format!("{}/oauth/callback", cockpit.api))
        .query(&[("code", "member:alice"), ("state", &state)])
        .send()
        .await
        .expect("callback");
    assert_eq!(page.status(), 200);
    // The login page ends with a one-time link back to the bot; only this chat may redeem it.
    let page = page.text().await.expect("page");
    let code = support::login_code(&page);
    telegram.send_text(chat, &format!("/start {code}"));
    telegram
        .wait_text(chat, "You have been authorized", WAIT)
        .await;
    (telegram, itsyou, cockpit)
}

#[tokio::test]
async fn a_failing_scheduled_run_reaches_a_subscribed_chat_and_a_signed_webhook() {
    let receiver = Receiver::start(HOOK_SECRET).await;
    let chat = 7;
    let (telegram, _itsyou, cockpit) = bot_world(&notify_config(&receiver, 100), chat).await;
    let api = Api::new(&cockpit);

    // No such repository yet: nothing is subscribed.
    telegram.send_text(chat, "/notify on nightly");
    telegram.wait_text(chat, "not found", WAIT).await;

    // A repository whose `check` runs every second, and fails.
    failing_repository(
        &api,
        "nightly",
        "recurring:\n  - {action: check, period: 1}\n",
    )
    .await;
    telegram.send_text(chat, "/notify on nightly");
    telegram
        .wait_text(chat, "will hear when a run of nightly fails", WAIT)
        .await;

    // The chat is told, though it did not start the run.
    let told = telegram
        .wait_text(chat, "in nightly ended: error", WAIT)
        .await;
    assert!(told.contains("failed"), "{told}");

    // The webhook got the same notice, signed with its secret.
    let delivery = eventually(WAIT, "a webhook delivery", || async {
        receiver.deliveries().into_iter().next()
    })
    .await;
    assert!(delivery.signed, "bad signature: {delivery:?}");
    assert_eq!(delivery.event, "run.ended");
    assert_eq!(delivery.body["repo"], "nightly");
    assert_eq!(delivery.body["state"], "error");
    assert_eq!(delivery.body["origin"], json!({"recurring": true}));
    assert!(told.contains(delivery.body["run"].as_str().expect("run key")));

    // Off: the chat hears no more (its last notice is the one before the switch).
    telegram.send_text(chat, "/notify off nightly");
    telegram
        .wait_text(
            chat,
            "will no longer hear about failed runs of nightly",
            WAIT,
        )
        .await;
    let refused = telegram.refusals();
    assert!(refused.is_empty(), "Telegram would refuse: {refused:#?}");
    let logs = cockpit.log_text();
    for secret in [BOT_TOKEN, HOOK_SECRET] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_takes_the_notice_and_a_restart_keeps_it() {
    let receiver = Receiver::start(HOOK_SECRET).await;
    let cockpit = Cockpit::start(&notify_config(&receiver, 300));
    let api = Api::new(&cockpit);
    failing_repository(&api, "demo", "").await;

    // Fails twice, then takes it: three attempts of one delivery, backing off.
    receiver.answer_next(&[500, 503]);
    let (status, _) = api
        .post("/demo/service/node/a/action/check", json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, run) = api.post("/demo/aysrun", json!({})).await;
    assert_eq!(status, 201, "{run}");
    let key = run["key"].as_str().expect("key").to_string();
    let attempts = eventually(WAIT, "three attempts", || async {
        let all = receiver.deliveries();
        (all.len() >= 3).then_some(all)
    })
    .await;
    let statuses: Vec<u16> = attempts.iter().map(|d| d.status).collect();
    assert_eq!(statuses, [500, 503, 200]);
    assert!(attempts.iter().all(|d| d.signed && d.id == attempts[0].id));
    assert_eq!(attempts[0].body["run"], key.as_str());
    assert_eq!(attempts[0].body["origin"], json!({"api": true}));

    // Another failure while the receiver is down: one attempt, then cockpit is killed.
    receiver.answer_always(Some(503));
    api.post("/demo/service/node/a/action/check", json!({}))
        .await;
    let (status, run) = api.post("/demo/aysrun", json!({})).await;
    assert_eq!(status, 201, "{run}");
    let second = run["key"].as_str().expect("key").to_string();
    eventually(WAIT, "an attempt of the second notice", || async {
        receiver
            .deliveries()
            .into_iter()
            .find(|d| d.body["run"] == second.as_str())
    })
    .await;
    let cockpit = cockpit.kill_and_restart();
    receiver.answer_always(None);
    let delivered = eventually(WAIT, "the second notice after the restart", || async {
        receiver
            .deliveries()
            .into_iter()
            .find(|d| d.body["run"] == second.as_str() && d.status == 200)
    })
    .await;
    assert!(delivered.signed);
    // Delivered once: nothing more of it comes.
    let metrics = reqwest::get(format!("{}/metrics", cockpit.api))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("cockpit_notices_delivered_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_run_message_shows_progress_within_edit_limits_and_its_cancel_button_cancels() {
    let chat = 8;
    let (telegram, _itsyou, cockpit) = bot_world("", chat).await;
    let api = Api::new(&cockpit);
    let (status, view) = api.post("", json!({"name": "slow"})).await;
    assert_eq!(status, 201, "{view}");
    let ticking = "i=0; while [ $i -lt 120 ]; do i=$((i+1)); echo tick $i; sleep 0.5; done";
    template(&repo_path(&view), "node", "", &[("install", ticking)]);
    let blueprint = "node__a: {}\nactions:\n  - action: install\n";
    let (status, _) = api
        .post(
            "/slow/blueprint",
            json!({"name": "b.yaml", "content": blueprint}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(api.post("/slow/blueprint/b.yaml", json!({})).await.0, 200);
    telegram.send_text(chat, "/repo select slow");
    telegram.wait_text(chat, "slow", WAIT).await;
    let since = std::time::Instant::now();
    telegram.send_text(chat, "/run execute");
    let started = telegram.wait_text(chat, "started", WAIT).await;
    let key = started
        .split_whitespace()
        .nth(1)
        .expect("the run key")
        .to_string();
    // The same message is edited with the last lines while the job runs.
    let (message_id, _) = eventually(WAIT, "the run message with its progress", || async {
        telegram.last_message(chat).filter(|(_, shown)| {
            shown.text.contains(&format!("Run {key} in slow: running"))
                && shown.text.contains("tick ")
        })
    })
    .await;
    let shown = telegram.message(chat, message_id).expect("message");
    assert!(shown.text.contains("Steps done: 0/1"), "{}", shown.text);
    // Its Cancel button cancels the run (the same cancel as REST).
    telegram.click(chat, "Cancel");
    telegram
        .wait_text(chat, &format!("Run {key} cancelled"), WAIT)
        .await;
    let (_, run) = api.get(&format!("/slow/aysrun/{key}")).await;
    assert_eq!(run["state"], "cancelled", "{run}");
    // The message shows the end, without the button.
    let last = eventually(WAIT, "the run message's last edit", || async {
        telegram
            .message(chat, message_id)
            .filter(|m| m.text.contains("cancelled"))
    })
    .await;
    assert!(last.buttons.is_empty(), "{last:?}");
    // At most one edit per 3 s (and one at the end).
    let elapsed = since.elapsed().as_secs_f64();
    let edits = telegram
        .calls()
        .iter()
        .filter(|c| c.method == "editmessagetext" && c.params["message_id"] == message_id)
        .count();
    assert!(
        edits as f64 <= elapsed / 3.0 + 2.0,
        "{edits} edits in {elapsed:.1} s"
    );
    // The repository is free at once: the next run starts.
    let (status, _) = api.post("/slow/aysrun", json!({})).await;
    assert_eq!(status, 201);
    let refused = telegram.refusals();
    assert!(refused.is_empty(), "Telegram would refuse: {refused:#?}");
}
