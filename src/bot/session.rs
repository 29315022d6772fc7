//! The `ChatSession` actor: one per Telegram chat. It answers the chat's commands by asking the
//! OAuth cache and the AYS actors, and keeps what the chat is in the middle of (a prompt such as
//! "paste your blueprint") in the store, so that a session that crashes or is stopped when idle
//! comes back exactly where it was. Replies go to the chat's outbox, which sends them in order.

use ractor::{Actor, ActorProcessingErr, ActorRef, call_t};
use serde_json::{Value, json};
use tracing::warn;

use super::commands::{
    self, Ask, BlueprintCmd, Command, NotifyCmd, Pick, RepoCmd, RunCmd, ServiceCmd,
};
use super::progress::{self, RunMessages};
use super::render::escape;
use super::telegram::{self, Outbox};
use super::views::{self, BlueprintItem, BlueprintView, RunItem, ServiceItem, View};
use super::{Button, Incoming, IncomingKind, OnSent, Outgoing};
use crate::actors::oauth_cache::OAuthCacheMsg;
use crate::actors::{Shared, names};
use crate::auth::access::{Action, Principal, refusal};
use crate::auth::approvals::{self, ApprovalError};
use crate::auth::audit::{self, Audit, Door, Outcome};
use crate::auth::tokens;
use crate::client::{AysClient, AysError, RunRequest};
use crate::oauth::login;
use crate::oauth::provider::LoginSecrets;
use crate::store::{AuthorizedUser, Origin};

/// How long an actor call may take before the chat is told to retry.
const CALL_MS: u64 = 30_000;

/// Days a token from `/token` stays valid.
const TOKEN_DAYS: u64 = 30;

/// The largest blueprint accepted as an uploaded document.
const MAX_DOCUMENT: u32 = 1024 * 1024;

/// Messages of a chat session.
pub enum ChatMsg {
    /// An update from the chat.
    Incoming(Incoming),
    /// A document finished downloading (or failed).
    Downloaded {
        /// The user who sent it.
        user_id: i64,
        /// The file's text, or why it could not be had.
        content: Result<String, String>,
    },
}

/// How a session is started.
pub struct ChatSessionArgs {
    /// Config, store, telemetry.
    pub shared: Shared,
    /// The chat.
    pub chat_id: i64,
    /// Where replies go.
    pub outbox: Outbox,
    /// For document downloads.
    pub client: teloxide::Bot,
    /// The run messages the bot edits with their progress.
    pub runs: RunMessages,
}

/// The chat session actor.
pub struct ChatSession;

/// The session's state; the durable part (`pending`) is mirrored in the store.
pub struct ChatState {
    /// Config, store, telemetry.
    shared: Shared,
    /// The chat.
    chat_id: i64,
    /// Where replies go.
    outbox: Outbox,
    /// For document downloads.
    client: teloxide::Bot,
    /// The run messages the bot edits with their progress.
    runs: RunMessages,
    /// While a list's ‹ › press is handled: the message showing the list, which the next page
    /// replaces.
    edit: Option<i64>,
    /// Whether the chat was just told its login ended (so "please use /start" is not repeated).
    told: std::sync::atomic::AtomicBool,
    /// While `/confirm` carries out a destructive command: it may run without asking again.
    confirmed: bool,
}

/// What a chat waits for, stored as JSON: `{"blueprint": name, "repo": repo}`.
fn pending_blueprint(value: &Value) -> Option<(String, String)> {
    Some((
        value["repo"].as_str()?.to_string(),
        value["blueprint"].as_str()?.to_string(),
    ))
}

impl Actor for ChatSession {
    type Msg = ChatMsg;
    type State = ChatState;
    type Arguments = ChatSessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ChatSessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ChatState {
            shared: args.shared,
            chat_id: args.chat_id,
            outbox: args.outbox,
            client: args.client,
            runs: args.runs,
            edit: None,
            told: std::sync::atomic::AtomicBool::new(false),
            confirmed: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The work is boxed: the actor's task keeps this future for the session's whole life,
        // and unboxed it would embed the largest command's state machine in every idle chat.
        match message {
            ChatMsg::Incoming(incoming) => Box::pin(state.incoming(&myself, incoming)).await,
            ChatMsg::Downloaded { user_id, content } => match content {
                Ok(text) => Box::pin(state.text(user_id, &text)).await,
                Err(why) => state.say(&format!("I could not read that file: {why}")),
            },
        }
        Ok(())
    }
}

impl ChatState {
    fn say(&self, text: &str) {
        self.outbox.send(Outgoing::text(self.chat_id, text));
    }

    /// Sends text with a keyboard; buttons whose data exceeds Telegram's 64 bytes are left out
    /// (cutting them would send another command).
    fn say_with(&self, text: &str, keyboard: Vec<Vec<Button>>) {
        let keyboard = keyboard
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .filter(|b| b.data.len() <= 64)
                    .collect::<Vec<_>>()
            })
            .filter(|row| !row.is_empty())
            .collect();
        self.outbox.send(Outgoing::Message {
            chat_id: self.chat_id,
            text: escape(text),
            keyboard,
        });
    }

    /// Shows a view: a new message, or the page of a list in place of the one it turns.
    fn show(&self, view: View) {
        let View { text, keyboard } = view;
        self.outbox.send(match self.edit {
            Some(message_id) => Outgoing::Edit {
                chat_id: self.chat_id,
                message_id,
                text,
                keyboard,
            },
            None => Outgoing::Message {
                chat_id: self.chat_id,
                text,
                keyboard,
            },
        });
    }

    /// Button data that names an item by a short reference ([`views::short_ref`], for names too
    /// long for Telegram's 64 bytes) with the name put back; unchanged when it holds none or
    /// nothing matches.
    async fn expand_ref(&self, user_id: i64, data: &str) -> String {
        let Some((head, reference)) = data.rsplit_once(' ').filter(|(_, r)| views::is_ref(r))
        else {
            return data.to_string();
        };
        // Only for a user who may see the lists; the command refuses the others anyway.
        let Some(user) = self.user(user_id).await else {
            return data.to_string();
        };
        let names: Vec<String> = if head.starts_with("/repo") {
            let repos = AysClient.list_repos().await.unwrap_or_default();
            repos.into_iter().map(|r| r.name).collect()
        } else {
            let Some(repo) = user.current_repo else {
                return data.to_string();
            };
            if head.starts_with("/blueprint") {
                AysClient
                    .list_blueprints(&repo, true)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|b| b.name)
                    .collect()
            } else if head.starts_with("/service") {
                AysClient
                    .list_services(&repo, None)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| s.key)
                    .collect()
            } else {
                Vec::new()
            }
        };
        match names.into_iter().find(|n| views::short_ref(n) == reference) {
            Some(name) => format!("{head} {name}"),
            None => data.to_string(),
        }
    }

    async fn incoming(&mut self, myself: &ActorRef<ChatMsg>, incoming: Incoming) {
        let Incoming {
            user_id,
            username,
            kind,
            ..
        } = incoming;
        match kind {
            IncomingKind::Text(text) => match commands::parse(&text) {
                Command::Text(text) => self.text(user_id, &text).await,
                command => self.command(user_id, &username, command).await,
            },
            IncomingKind::Callback {
                id,
                data,
                message_id,
            } => {
                self.outbox.send(Outgoing::AnswerCallback { id });
                let data = self.expand_ref(user_id, &data).await;
                let command = commands::parse(&data);
                // A list's ‹ › (a list command with its page) turn the page in place.
                let turn = data.starts_with("/pick ")
                    || matches!(
                        command,
                        Command::Repo(RepoCmd::List(Some(_)))
                            | Command::Blueprint(BlueprintCmd::List(Some(_)))
                            | Command::Service(ServiceCmd::List(Some(_)))
                            | Command::Run(RunCmd::List(Some(_)))
                            | Command::Run(RunCmd::ListIn { page: Some(_), .. })
                    );
                self.edit = message_id.filter(|_| turn);
                self.command(user_id, &username, command).await;
                self.edit = None;
            }
            IncomingKind::Document {
                file_id,
                file_name,
                size,
            } => {
                if self.user(user_id).await.is_none() {
                    return self.unknown();
                }
                if !matches!(self.pending(), Some(Some(_))) {
                    return self.say(
                        "I was not waiting for a file. Use /blueprint add <name> first, then send the YAML.",
                    );
                }
                if size > MAX_DOCUMENT {
                    return self.say("That file is too large for a blueprint (1 MiB at most).");
                }
                let _ = file_name;
                // Downloading is network IO: done on a task, the result comes back as a message.
                let client = self.client.clone();
                let me = myself.clone();
                tokio::spawn(async move {
                    let content = telegram::download(&client, &file_id, MAX_DOCUMENT)
                        .await
                        .and_then(|bytes| {
                            String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())
                        });
                    let _ = me.cast(ChatMsg::Downloaded { user_id, content });
                });
            }
        }
    }

    /// What the chat waits for: `None` when the store failed, `Some(None)` when nothing.
    fn pending(&self) -> Option<Option<(String, String)>> {
        match self.shared.store.chat_pending(self.chat_id) {
            Ok(value) => Some(value.as_ref().and_then(pending_blueprint)),
            Err(err) => {
                warn!(chat_id = self.chat_id, %err, "cannot read the chat's prompt");
                None
            }
        }
    }

    /// The logged-in user, once their login passed its checks (age, and membership at the
    /// provider when a recheck is due). A login that ended is removed, and the chat told why.
    async fn user(&self, user_id: i64) -> Option<AuthorizedUser> {
        let cache = ractor::ActorRef::<OAuthCacheMsg>::where_is(names::OAUTH_CACHE)?;
        let user = call_t!(
            cache,
            |reply| OAuthCacheMsg::User { user_id, reply },
            CALL_MS
        )
        .ok()?
        .ok()??;
        let now = crate::clock::now_ms();
        match login::check(&self.shared.config, &user, now).await {
            login::Check::Valid => Some(user),
            login::Check::Confirmed { groups, credential } => {
                if let Err(err) =
                    self.shared
                        .store
                        .record_check(user_id, &groups, credential.as_ref(), now)
                {
                    warn!(chat_id = self.chat_id, %err, "cannot record a membership check");
                }
                Some(AuthorizedUser { groups, ..user })
            }
            login::Check::Unverified(why) => {
                warn!(
                    chat_id = self.chat_id,
                    user_id, "membership check failed, retried at the next command: {why}"
                );
                Some(user)
            }
            login::Check::Ended(ended) => {
                if let Err(err) = self.shared.store.end_login(user_id) {
                    warn!(chat_id = self.chat_id, %err, "cannot end a login");
                }
                tracing::info!(chat_id = self.chat_id, user_id, reason = ?ended, "telegram login ended");
                self.told.store(true, std::sync::atomic::Ordering::Relaxed);
                self.say(&format!("{} Send /start to log in again.", ended.message()));
                None
            }
        }
    }

    /// Tells a chat whose user is not logged in how to log in, unless the check that found it
    /// out just told them why.
    fn unknown(&self) {
        if !self.told.swap(false, std::sync::atomic::Ordering::Relaxed) {
            self.say("I don't know you yet, please use /start");
        }
    }

    /// Plain text: the answer to a prompt, or a hint.
    async fn text(&mut self, user_id: i64, text: &str) {
        if self.user(user_id).await.is_none() {
            return self.unknown();
        }
        if let Ok(Some(prompt)) = self.shared.store.chat_pending(self.chat_id)
            && prompt["ask"].is_string()
        {
            return self.answer(user_id, &prompt, text).await;
        }
        let Some(Some((repo, name))) = self.pending() else {
            return self.say("Send a command; /help lists them.");
        };
        let _ = self.shared.store.set_chat_pending(self.chat_id, None);
        let Some(user) = self.user(user_id).await else {
            return self.say("I don't know you yet, please use /start");
        };
        let command = Command::Blueprint(BlueprintCmd::Add(name.clone()));
        let Some(action) = self.permit(&user, &command) else {
            return;
        };
        let audit = Audit::new(
            Door::Telegram,
            &self.principal(&user).identity,
            action,
            &format!("{repo}/{name}"),
        );
        let result = AysClient
            .put_blueprint(
                &repo,
                name.clone(),
                text.to_string(),
                true,
                Some(audit.clone()),
            )
            .await;
        self.audit_failure(Some(&audit), &result);
        match result {
            Ok(_) => self.say_with(
                &format!("Blueprint {name} saved in {repo}."),
                vec![vec![button(
                    &format!("Execute {name}"),
                    &format!("/blueprint execute {name}"),
                )]],
            ),
            Err(err) => self.say(&format!("Blueprint {name} not saved: {err}")),
        }
    }

    async fn command(&mut self, user_id: i64, username: &str, command: Command) {
        match command {
            Command::Help => self.say(commands::HELP),
            Command::Start(code) => self.start(user_id, username, code).await,
            Command::Unknown(name) => self.say(&format!(
                "I don't know the command /{name}. /help lists what I can do."
            )),
            Command::Usage(usage) => self.say(&format!("Usage: {usage}")),
            Command::Text(_) => {}
            Command::Crash if self.shared.config.debug.fault_injection => {
                panic!(
                    "fault injection: chat session {} crashed on request",
                    self.chat_id
                )
            }
            Command::Crash => {
                self.say("I don't know the command /crash. /help lists what I can do.")
            }
            command => {
                let Some(user) = self.user(user_id).await else {
                    return self.unknown();
                };
                if matches!(
                    command,
                    Command::Pick { .. }
                        | Command::Ask(_)
                        | Command::Skip
                        | Command::Token
                        | Command::Approve(_)
                ) && self.permit(&user, &command).is_none()
                {
                    return;
                }
                let result = match command {
                    Command::Token => self.token(&user),
                    Command::Confirm => self.confirm_command(&user).await,
                    Command::Approve(id) => self.approve(&user, &id).await,
                    Command::Repo(cmd) => self.repo(&user, cmd).await,
                    Command::Blueprint(cmd) => self.blueprint(&user, cmd).await,
                    Command::Service(cmd) => self.service(&user, cmd).await,
                    Command::Run(cmd) => self.run(&user, cmd).await,
                    Command::Notify(cmd) => self.notify(&user, cmd).await,
                    Command::Pick { pick, page } => self.pick(&user, pick, page).await,
                    Command::Ask(ask) => self.ask(&user, ask),
                    Command::Skip => self.skip(&user).await,
                    _ => Ok(()),
                };
                if let Err(err) = result {
                    self.say(&err.to_string());
                }
            }
        }
    }

    async fn start(&mut self, user_id: i64, username: &str, code: Option<String>) {
        if let Some(code) = code {
            return self.confirm(user_id, &code).await;
        }
        if let Some(user) = self.user(user_id).await {
            return self.say(&format!("Welcome back {}!", user.username));
        }
        self.told.store(false, std::sync::atomic::Ordering::Relaxed);
        let config = &self.shared.config;
        let provider = login::login_provider(config);
        let Some(cache) = ractor::ActorRef::<OAuthCacheMsg>::where_is(names::OAUTH_CACHE) else {
            return self.say("Login is restarting; try /start again in a moment.");
        };
        let secrets = LoginSecrets::new();
        let data = login::start_data(self.chat_id, user_id, username, provider.name(), &secrets);
        let state = call_t!(
            cache,
            |reply| OAuthCacheMsg::NewState {
                purpose: login::PURPOSE.into(),
                data,
                ttl: None,
                reply
            },
            CALL_MS
        );
        let Ok(Ok(state)) = state else {
            return self.say("Login is unavailable right now; try /start again in a moment.");
        };
        let url = match login::authorize_url(config, provider, &state, &secrets).await {
            Ok(url) => url,
            Err(err) => {
                // The reason names an endpoint or a rule, never a secret (`ProviderError`), and
                // tells the operator the user reports it to what to fix.
                warn!(chat_id = self.chat_id, %err, "cannot start a login");
                return self.say(&format!(
                    "Login is unavailable right now ({err}); try /start again later, or tell the operator."
                ));
            }
        };
        let after = "At the end, the login page shows a link back to me: open it with this \
                     Telegram account to finish.";
        match provider {
            login::LoginProvider::ItsYou(oauth) => self.say(&format!(
                "Hello! To use this cockpit, log in with ItsYou.online and allow me to check that you are a member of {}:\n{url}\n{after}",
                oauth.organization
            )),
            login::LoginProvider::Provider(p) => {
                let who = login::allowed_in_words(config);
                let members = if who.is_empty() {
                    String::new()
                } else {
                    format!(" (members of {who})")
                };
                self.say(&format!(
                    "Hello! To use this cockpit, log in with {}{members}:\n{url}\n{after}",
                    p.name
                ))
            }
        }
    }

    /// `/start <code>`: the one-time code of a login completed in a browser. It authorizes only
    /// the Telegram user who sent `/start` for that login, in the same chat.
    async fn confirm(&mut self, user_id: i64, code: &str) {
        let Some(cache) = ractor::ActorRef::<OAuthCacheMsg>::where_is(names::OAUTH_CACHE) else {
            return self.say("Login is restarting; try again in a moment.");
        };
        let taken = call_t!(
            cache,
            |reply| OAuthCacheMsg::TakeState {
                state: code.to_string(),
                purpose: login::CONFIRM.into(),
                reply
            },
            CALL_MS
        );
        let Ok(Ok(Some(data))) = taken else {
            return self.say(
                "This login link is unknown, already used or expired. Send /start to log in again.",
            );
        };
        let now = crate::clock::now_ms();
        let user = match login::confirmed_user(
            &self.shared.config,
            &data,
            self.chat_id,
            user_id,
            now,
        ) {
            Ok(user) => user,
            Err(login::Refusal::OtherAccount) => {
                warn!(
                    chat_id = self.chat_id,
                    user_id,
                    "a login code was sent from another Telegram account than the one that started the login"
                );
                return self.say(
                    "This login link belongs to another Telegram account's login, so it does not log you in. Send /start to log in yourself.",
                );
            }
            Err(login::Refusal::Damaged) => {
                return self.say("This login link is damaged. Send /start to log in again.");
            }
        };
        let username = user.username.clone();
        let stored = call_t!(
            cache,
            |reply| OAuthCacheMsg::Authorize { user, reply },
            CALL_MS
        );
        if !matches!(stored, Ok(Ok(()))) {
            return self.say("Could not record the login; send /start to try again.");
        }
        tracing::info!(chat_id = self.chat_id, user_id, "telegram user authorized");
        self.say(&format!(
            "You have been authorized, {username}. /help lists what I can do."
        ))
    }

    /// `/notify`, once the user's role allows it (viewer), audited.
    async fn notify(&mut self, user: &AuthorizedUser, cmd: NotifyCmd) -> Result<(), AysError> {
        let command = Command::Notify(cmd.clone());
        let Some(action) = self.permit(user, &command) else {
            return Ok(());
        };
        let result = self.notify_do(user, cmd).await;
        self.audit_result(user, action, &command, &result);
        result
    }

    /// `/notify`: which repositories' failed runs this chat hears about.
    async fn notify_do(&mut self, user: &AuthorizedUser, cmd: NotifyCmd) -> Result<(), AysError> {
        let store = &self.shared.store;
        let (on, repo) = match cmd {
            NotifyCmd::Status => {
                let repos = store.notify_repos(self.chat_id)?;
                if repos.is_empty() {
                    self.say("This chat hears about no repository's failed runs. /notify on <repo> to start.");
                } else {
                    self.say(&format!(
                        "This chat hears when a run fails or is cancelled in: {}.\n/notify off <repo> to stop.",
                        repos.join(", ")
                    ));
                }
                return Ok(());
            }
            NotifyCmd::On(repo) => (true, repo),
            NotifyCmd::Off(repo) => (false, repo),
        };
        let repo = match repo {
            Some(repo) => repo,
            None => Self::current_repo(user)?,
        };
        if on {
            // Only an existing repository (the answer is the client's 404 otherwise).
            AysClient.get_repo(repo.clone()).await?;
        }
        self.shared.store.set_notify_chat(self.chat_id, &repo, on)?;
        if on {
            self.say(&format!(
                "This chat will hear when a run of {repo} fails or is cancelled. /notify off {repo} to stop."
            ));
        } else {
            self.say(&format!(
                "This chat will no longer hear about failed runs of {repo}."
            ));
        }
        Ok(())
    }

    /// The message of a run the chat started, with its Cancel button (the same cancel as REST);
    /// once sent, the bot edits it with the run's progress.
    fn started(&self, repo: &str, key: &str, steps: usize) {
        let text = progress::started(key, steps);
        let runs = self.runs.clone();
        let (run, repo, chat_id, shown) = (
            key.to_string(),
            repo.to_string(),
            self.chat_id,
            text.clone(),
        );
        self.outbox.send(Outgoing::Tracked {
            chat_id: self.chat_id,
            text,
            keyboard: progress::cancel_button(key),
            on_sent: OnSent(std::sync::Arc::new(move |message_id: i64| {
                runs.track(&run, &repo, chat_id, message_id, shown.clone());
            })),
        });
    }

    /// Who the user is to `[access]`.
    fn principal(&self, user: &AuthorizedUser) -> Principal {
        super::principal(user, &self.shared.config)
    }

    /// The action `command` is, when the user's role allows it ([`commands::needs`]); a refusal
    /// is said (naming the role needed) and audited, and gives `None`.
    fn permit(&self, user: &AuthorizedUser, command: &Command) -> Option<Action> {
        let action = commands::needs(command)?;
        let principal = self.principal(user);
        let role = self.shared.config.access_rules().role(&principal);
        if role >= Some(action.role()) {
            return Some(action);
        }
        let why = refusal(action.role(), role);
        let target = commands::target(command, user.current_repo.as_deref());
        let row = audit::record(
            Door::Telegram,
            &principal.identity,
            action,
            &target,
            &Outcome::Denied(why.clone()),
        );
        audit::write(&self.shared.store, &row);
        self.say(&format!("Sorry, {why}."));
        None
    }

    /// The audit entry of `command` (`None` when it changes nothing), for the core to write
    /// with the change.
    fn audit_entry(
        &self,
        user: &AuthorizedUser,
        action: Action,
        command: &Command,
    ) -> Option<Audit> {
        action.changes().then(|| {
            Audit::new(
                Door::Telegram,
                &self.principal(user).identity,
                action,
                &commands::target(command, user.current_repo.as_deref()),
            )
        })
    }

    /// The `error` row of a command the core refused or failed (it changed nothing); the core
    /// wrote the row of one that went through.
    fn audit_failure<T>(&self, audit: Option<&Audit>, result: &Result<T, AysError>) {
        if let (Some(audit), Err(err)) = (audit, result) {
            audit::write(
                &self.shared.store,
                &audit.row(&Outcome::Error(err.to_string())),
            );
        }
    }

    /// The audit row of a command that changes something only the bot keeps (`/notify`).
    fn audit_result(
        &self,
        user: &AuthorizedUser,
        action: Action,
        command: &Command,
        result: &Result<(), AysError>,
    ) {
        if !action.changes() {
            return;
        }
        let outcome = match result {
            Ok(()) => Outcome::Ok,
            Err(err) => Outcome::Error(err.to_string()),
        };
        let target = commands::target(command, user.current_repo.as_deref());
        let row = audit::record(
            Door::Telegram,
            &self.principal(user).identity,
            action,
            &target,
            &outcome,
        );
        audit::write(&self.shared.store, &row);
    }

    /// Whether `[access].two_person` holds the action until a second admin approves it (then the
    /// chat is told how to approve).
    /// The action `command` is, when it may be carried out now: the role allows it
    /// ([`Self::permit`]), a destructive command was confirmed (else the Confirm button is
    /// offered), and `[access].two_person` does not hold it ([`Self::held`]). `None`: the chat has
    /// been told why not.
    fn admit(&self, user: &AuthorizedUser, command: &Command) -> Result<Option<Action>, AysError> {
        let Some(action) = self.permit(user, command) else {
            return Ok(None);
        };
        if !self.confirmed
            && let Some(text) = commands::destructive(command)
        {
            self.ask_confirmation(user, &text)?;
            return Ok(None);
        }
        if self.held(user, action, command) {
            return Ok(None);
        }
        Ok(Some(action))
    }

    fn held(&self, user: &AuthorizedUser, action: Action, command: &Command) -> bool {
        if !self.shared.config.access_rules().two_person(action) {
            return false;
        }
        let target = commands::target(command, user.current_repo.as_deref());
        let who = self.principal(user).identity;
        match approvals::request(&self.shared.store, Door::Telegram, &who, action, &target) {
            Ok(id) => self.say(&format!(
                "{} {target} needs a second admin: they send /approve {id} (or POST /auth/approvals/{id}).",
                action.as_str()
            )),
            Err(err) => self.say(&format!("I could not hold that for approval: {err}")),
        }
        true
    }

    /// `/approve <id>`: a second admin approves a held action, which is carried out now.
    async fn approve(&mut self, user: &AuthorizedUser, id: &str) -> Result<(), AysError> {
        let approver = self.principal(user).identity;
        let held = approvals::approve(&self.shared.store, Door::Telegram, &approver, id);
        let (action, target, requested_by) = match held {
            Ok(held) => held,
            Err(ApprovalError::Store(err)) => return Err(err.into()),
            Err(err) => {
                self.say(&format!("Not approved: {err}."));
                return Ok(());
            }
        };
        // The requester's action, written by the core with the change; a failure here.
        let audit = Audit::new(Door::Telegram, &requested_by, action, &target);
        let result = AysClient.carry_out(audit.clone()).await;
        if let Err(err) = &result {
            let why = Outcome::Error(format!("approved by {approver}: {err}"));
            audit::write(&self.shared.store, &audit.row(&why));
        }
        result?;
        self.say(&format!(
            "Approved: {} {target} (asked by {requested_by}) is done.",
            action.as_str()
        ));
        Ok(())
    }

    /// Holds a destructive command until the same user presses Confirm (within 60 s).
    fn ask_confirmation(&self, user: &AuthorizedUser, text: &str) -> Result<(), AysError> {
        let pending = json!({
            "confirm": text,
            "user_id": user.user_id,
            "expires_ms": crate::clock::now_ms().saturating_add(commands::CONFIRM_MS),
        });
        self.shared
            .store
            .set_chat_pending(self.chat_id, Some(&pending))?;
        self.say_with(
            &format!("Really {}? Press Confirm within 60 seconds.", &text[1..]),
            vec![vec![button("Confirm", "/confirm")]],
        );
        Ok(())
    }

    /// `/confirm`: carries out the destructive command this user asked for, if still fresh.
    async fn confirm_command(&mut self, user: &AuthorizedUser) -> Result<(), AysError> {
        let pending = self.shared.store.chat_pending(self.chat_id)?;
        let Some(pending) = pending.filter(|p| p["confirm"].is_string()) else {
            self.say("There is nothing to confirm.");
            return Ok(());
        };
        if pending["user_id"].as_i64() != Some(user.user_id) {
            self.say("Only the person who asked can confirm.");
            return Ok(());
        }
        self.shared.store.set_chat_pending(self.chat_id, None)?;
        let Some(text) = commands::confirmed(&pending, user.user_id, crate::clock::now_ms()) else {
            self.say("That confirmation has expired; send the command again.");
            return Ok(());
        };
        self.confirmed = true;
        let result = match commands::parse(&text) {
            Command::Repo(cmd) => self.repo(user, cmd).await,
            Command::Blueprint(cmd) => self.blueprint(user, cmd).await,
            Command::Service(cmd) => self.service(user, cmd).await,
            _ => Ok(()),
        };
        self.confirmed = false;
        result
    }

    /// `/token`: a new API token with the user's role, shown only in their private chat.
    fn token(&self, user: &AuthorizedUser) -> Result<(), AysError> {
        if self.chat_id != user.user_id {
            self.say(
                "Send /token in a private chat with me: a token must not be shown in a group.",
            );
            return Ok(());
        }
        let principal = self.principal(user);
        let Some(role) = self.shared.config.access_rules().role(&principal) else {
            return Ok(());
        };
        let issued = tokens::issue(
            &self.shared.store,
            Door::Telegram,
            &principal.identity,
            &principal.identity,
            role,
            "telegram",
            role,
            TOKEN_DAYS,
        );
        match issued {
            Ok((token, record)) => {
                self.say(&format!(
                    "Your API token ({role}, id {}, valid {TOKEN_DAYS} days). It is shown only this once; send it as `Authorization: Bearer <token>`:\n{token}",
                    record.id
                ));
                Ok(())
            }
            Err(err) => Err(AysError::Internal(err.to_string())),
        }
    }

    fn current_repo(user: &AuthorizedUser) -> Result<String, AysError> {
        user.current_repo.clone().ok_or_else(|| {
            AysError::BadRequest(
                "No repository selected: use /repo select <name> (or /repo list).".into(),
            )
        })
    }

    async fn repo(&mut self, user: &AuthorizedUser, cmd: RepoCmd) -> Result<(), AysError> {
        let command = Command::Repo(cmd.clone());
        let Some(action) = self.admit(user, &command)? else {
            return Ok(());
        };
        let audit = self.audit_entry(user, action, &command);
        let result = self.repo_do(user, cmd, audit.clone()).await;
        self.audit_failure(audit.as_ref(), &result);
        result
    }

    async fn repo_do(
        &mut self,
        user: &AuthorizedUser,
        cmd: RepoCmd,
        audit: Option<Audit>,
    ) -> Result<(), AysError> {
        match cmd {
            RepoCmd::Menu => self.show(views::menu(
                "What do you want to do with repositories?",
                commands::menu("repo"),
            )),
            RepoCmd::List(_) => {
                let page = match cmd {
                    RepoCmd::List(Some(page)) => page,
                    _ => 1,
                };
                let repos = AysClient.list_repos().await?;
                let names: Vec<String> = repos.into_iter().map(|r| r.name).collect();
                self.show(views::repo_list(&names, user.current_repo.as_deref(), page));
            }
            RepoCmd::Create { name, git_url } => {
                let created = AysClient
                    .create_repo(name.clone(), git_url, audit.clone())
                    .await;
                let view = match created {
                    // As the original bot did: creating one that exists selects it.
                    Err(err @ AysError::Conflict(_)) => {
                        self.audit_failure(audit.as_ref(), &Err::<(), _>(err));
                        let view = AysClient.get_repo(name).await?;
                        self.set_repo(user.user_id, Some(&view.name)).await?;
                        self.say(&format!(
                            "Repository {} already exists; selected.",
                            view.name
                        ));
                        return Ok(());
                    }
                    other => other?,
                };
                self.set_repo(user.user_id, Some(&view.name)).await?;
                self.say(&format!("Repository {} created and selected.", view.name));
            }
            RepoCmd::Select(name) => {
                AysClient.get_repo(name.clone()).await?;
                self.set_repo(user.user_id, Some(&name)).await?;
                self.say(&format!("Repository {name} selected."));
            }
            RepoCmd::Delete(name) => {
                AysClient.delete_repo(name.clone(), audit).await?;
                if user.current_repo.as_deref() == Some(name.as_str()) {
                    self.set_repo(user.user_id, None).await?;
                }
                self.say(&format!("Repository {name} deleted."));
            }
        }
        Ok(())
    }

    async fn set_repo(&self, user_id: i64, repo: Option<&str>) -> Result<(), AysError> {
        let cache = ractor::ActorRef::<OAuthCacheMsg>::where_is(names::OAUTH_CACHE)
            .ok_or_else(|| AysError::Internal("the OAuth cache is restarting; retry".into()))?;
        call_t!(
            cache,
            |reply| OAuthCacheMsg::SetCurrentRepo {
                user_id,
                repo: repo.map(String::from),
                reply
            },
            CALL_MS
        )
        .map_err(|err| AysError::Internal(err.to_string()))?
        .map_err(AysError::from)
    }

    async fn blueprint(
        &mut self,
        user: &AuthorizedUser,
        cmd: BlueprintCmd,
    ) -> Result<(), AysError> {
        let command = Command::Blueprint(cmd.clone());
        let Some(action) = self.admit(user, &command)? else {
            return Ok(());
        };
        // `add` only asks for the YAML: the save is audited when it comes.
        let audit = match command {
            Command::Blueprint(BlueprintCmd::Add(_)) => None,
            _ => self.audit_entry(user, action, &command),
        };
        let result = self.blueprint_do(user, cmd, audit.clone()).await;
        self.audit_failure(audit.as_ref(), &result);
        result
    }

    async fn blueprint_do(
        &mut self,
        user: &AuthorizedUser,
        cmd: BlueprintCmd,
        audit: Option<Audit>,
    ) -> Result<(), AysError> {
        let repo = Self::current_repo(user)?;
        match cmd {
            BlueprintCmd::Menu => self.show(views::menu(
                &format!("What do you want to do with the blueprints of {repo}?"),
                commands::menu("blueprint"),
            )),
            BlueprintCmd::List(_) => {
                let page = match cmd {
                    BlueprintCmd::List(Some(page)) => page,
                    _ => 1,
                };
                let list = AysClient.list_blueprints(&repo, true).await?;
                let items: Vec<BlueprintItem> = list
                    .into_iter()
                    .map(|bp| BlueprintItem {
                        name: bp.name,
                        archived: bp.archived,
                    })
                    .collect();
                self.show(views::blueprint_list(&repo, &items, page));
            }
            BlueprintCmd::Get(name) => {
                let bp = AysClient.get_blueprint(&repo, name).await?;
                self.outbox
                    .send(match views::blueprint(&bp.name, &bp.content) {
                        BlueprintView::Inline(text) => Outgoing::Message {
                            chat_id: self.chat_id,
                            text,
                            keyboard: Vec::new(),
                        },
                        BlueprintView::Document {
                            file_name,
                            content,
                            caption,
                        } => Outgoing::Document {
                            chat_id: self.chat_id,
                            file_name,
                            content,
                            caption,
                        },
                    });
            }
            BlueprintCmd::Add(name) => {
                let prompt = json!({"repo": repo, "blueprint": name});
                self.shared
                    .store
                    .set_chat_pending(self.chat_id, Some(&prompt))?;
                self.say(&format!(
                    "Send me the YAML of {name} as your next message, or upload it as a file."
                ));
            }
            BlueprintCmd::Execute(name) => {
                let done = AysClient.execute_blueprint(&repo, name, audit).await?;
                self.say_with(
                    &format!(
                        "Blueprint {} executed: {} service(s) created or changed.",
                        done.blueprint,
                        done.services.len()
                    ),
                    vec![vec![button("List services", "/service list")]],
                );
            }
            BlueprintCmd::Delete(name) => {
                AysClient
                    .delete_blueprint(&repo, name.clone(), audit)
                    .await?;
                self.say(&format!("Blueprint {name} deleted."));
            }
            BlueprintCmd::Archive(name) => {
                AysClient
                    .archive_blueprint(&repo, name.clone(), true, audit)
                    .await?;
                self.say(&format!("Blueprint {name} archived."));
            }
            BlueprintCmd::Restore(name) => {
                AysClient
                    .archive_blueprint(&repo, name.clone(), false, audit)
                    .await?;
                self.say(&format!("Blueprint {name} restored."));
            }
        }
        Ok(())
    }

    async fn service(&mut self, user: &AuthorizedUser, cmd: ServiceCmd) -> Result<(), AysError> {
        let command = Command::Service(cmd.clone());
        let Some(action) = self.admit(user, &command)? else {
            return Ok(());
        };
        let audit = self.audit_entry(user, action, &command);
        let result = self.service_do(user, cmd, audit.clone()).await;
        self.audit_failure(audit.as_ref(), &result);
        result
    }

    async fn service_do(
        &mut self,
        user: &AuthorizedUser,
        cmd: ServiceCmd,
        audit: Option<Audit>,
    ) -> Result<(), AysError> {
        let repo = Self::current_repo(user)?;
        match cmd {
            ServiceCmd::Menu => self.show(views::menu(
                &format!("What do you want to do with the services of {repo}?"),
                commands::menu("service"),
            )),
            ServiceCmd::List(_) => {
                let page = match cmd {
                    ServiceCmd::List(Some(page)) => page,
                    _ => 1,
                };
                let list = AysClient.list_services(&repo, None).await?;
                let items: Vec<ServiceItem> = list
                    .into_iter()
                    .map(|s| ServiceItem {
                        key: s.key,
                        actor: s.actor,
                        state: s.state.to_string(),
                    })
                    .collect();
                self.show(views::service_list(&repo, &items, page));
            }
            ServiceCmd::Inspect { role, name } => {
                let s = AysClient.get_service(&repo, role, name).await?;
                let mut text = format!("Service {} ({})\nstate: {}", s.key, s.actor, s.state);
                if let Some(parent) = &s.parent {
                    text.push_str(&format!("\nparent: {}!{}", parent.role, parent.name));
                }
                for p in &s.producers {
                    text.push_str(&format!("\nconsumes: {}!{}", p.role, p.name));
                }
                text.push_str("\nactions:");
                for a in &s.actions {
                    text.push_str(&format!("\n- {}: {}", a.name, a.state));
                }
                text.push_str(&format!(
                    "\ndata: {}",
                    serde_json::to_string_pretty(&s.data).unwrap_or_default()
                ));
                let keyboard = views::button_rows(s.actions.iter().map(|a| {
                    (
                        format!("Run {}", a.name),
                        format!("/service execute {}", a.name),
                        s.key.clone(),
                    )
                }));
                self.say_with(&text, keyboard);
            }
            ServiceCmd::Execute {
                action,
                role,
                name,
                args,
            } => {
                let args = (!args.is_empty()).then(|| {
                    serde_json::Value::Object(
                        args.into_iter()
                            .map(|(k, v)| (k, serde_json::Value::String(v)))
                            .collect(),
                    )
                });
                let targets: Vec<String> = match name {
                    Some(name) => vec![name],
                    None => AysClient
                        .list_services(&repo, Some(role.clone()))
                        .await?
                        .into_iter()
                        .map(|s| s.name)
                        .collect(),
                };
                if targets.is_empty() {
                    return Err(AysError::NotFound(format!("no service of role {role}")));
                }
                for name in &targets {
                    AysClient
                        .schedule_action(
                            &repo,
                            role.clone(),
                            name.clone(),
                            action.clone(),
                            args.clone(),
                            None,
                        )
                        .await?;
                }
                // One command, one row: written with the run it starts.
                let request = RunRequest {
                    simulate: false,
                    callback_url: None,
                    origin: Origin::Chat {
                        chat_id: self.chat_id,
                    },
                    audit,
                };
                let run = AysClient.create_run(&repo, request).await?;
                self.started(&repo, &run.key, run.steps.len());
            }
            ServiceCmd::Delete { role, name } => {
                let removed = AysClient.delete_service(&repo, role, name, audit).await?;
                self.say(&format!("Deleted: {}", removed.join(", ")));
            }
        }
        Ok(())
    }

    async fn run(&mut self, user: &AuthorizedUser, cmd: RunCmd) -> Result<(), AysError> {
        let command = Command::Run(cmd.clone());
        let Some(action) = self.permit(user, &command) else {
            return Ok(());
        };
        let audit = self.audit_entry(user, action, &command);
        let result = self.run_do(user, cmd, audit.clone()).await;
        self.audit_failure(audit.as_ref(), &result);
        result
    }

    async fn run_do(
        &mut self,
        user: &AuthorizedUser,
        cmd: RunCmd,
        audit: Option<Audit>,
    ) -> Result<(), AysError> {
        let repo = Self::current_repo(user)?;
        match cmd {
            RunCmd::Menu => self.show(views::menu(
                &format!("What do you want to do with the runs of {repo}?"),
                commands::menu("run"),
            )),
            RunCmd::List(_) | RunCmd::ListIn { .. } => {
                let (state, page) = match cmd {
                    RunCmd::List(page) => (None, page),
                    RunCmd::ListIn { state, page } => (Some(state), page),
                    _ => (None, None),
                };
                let runs = AysClient.list_runs(&repo).await?;
                let items: Vec<RunItem> = runs
                    .into_iter()
                    .filter(|r| state.as_ref().is_none_or(|s| r.state.to_string() == *s))
                    .map(|r| RunItem {
                        key: r.key,
                        state: r.state.to_string(),
                    })
                    .collect();
                self.show(views::run_list(
                    &repo,
                    &items,
                    state.as_deref(),
                    page.unwrap_or(1),
                ));
            }
            RunCmd::Simulate => {
                let request = RunRequest {
                    simulate: true,
                    callback_url: None,
                    origin: Origin::Chat {
                        chat_id: self.chat_id,
                    },
                    audit,
                };
                let run = AysClient.create_run(&repo, request).await?;
                let mut text = format!(
                    "The pending actions of {repo} would run in {} step(s):",
                    run.steps.len()
                );
                for step in &run.steps {
                    text.push_str(&format!("\nstep {}:", step.number));
                    for job in &step.jobs {
                        text.push_str(&format!("\n- {} {}", job.action_name, job.service_key));
                    }
                }
                self.say_with(&text, vec![vec![button("Execute", "/run execute")]]);
            }
            RunCmd::Execute => {
                let request = RunRequest {
                    simulate: false,
                    callback_url: None,
                    origin: Origin::Chat {
                        chat_id: self.chat_id,
                    },
                    audit,
                };
                let run = AysClient.create_run(&repo, request).await?;
                self.started(&repo, &run.key, run.steps.len());
            }
            RunCmd::Cancel(key) => {
                let who = format!("{} (Telegram)", user.username);
                let run = AysClient.cancel_run(&repo, key, &who, audit).await?;
                self.say(&format!("Run {} cancelled.", run.key));
            }
            RunCmd::Inspect(key) => {
                let run = AysClient.get_run(&repo, key).await?;
                let mut text = format!("Run {}: {}", run.key, run.state);
                if let Some(error) = &run.error {
                    text.push_str(&format!("\nerror: {error}"));
                }
                for step in &run.steps {
                    text.push_str(&format!("\nstep {}:", step.number));
                    for job in &step.jobs {
                        text.push_str(&format!(
                            "\n- {} {}: {}",
                            job.action_name, job.service_key, job.state
                        ));
                        for line in job.logs.iter().rev().take(5).rev() {
                            text.push_str(&format!("\n    {}", line.log));
                        }
                    }
                }
                self.say(&text);
            }
        }
        Ok(())
    }
}

impl ChatState {
    /// A subcommand without its argument: a picker of what it applies to.
    async fn pick(
        &mut self,
        user: &AuthorizedUser,
        pick: Pick,
        page: usize,
    ) -> Result<(), AysError> {
        let names: Vec<String> = match pick {
            Pick::RepoSelect | Pick::RepoDelete => AysClient
                .list_repos()
                .await?
                .into_iter()
                .map(|r| r.name)
                .collect(),
            Pick::BlueprintGet
            | Pick::BlueprintExecute
            | Pick::BlueprintDelete
            | Pick::BlueprintArchive
            | Pick::BlueprintRestore => {
                let repo = Self::current_repo(user)?;
                let list = AysClient.list_blueprints(&repo, true).await?;
                list.into_iter()
                    .filter(|bp| match pick {
                        Pick::BlueprintRestore => bp.archived,
                        Pick::BlueprintDelete => true,
                        _ => !bp.archived,
                    })
                    .map(|bp| bp.name)
                    .collect()
            }
            Pick::ServiceInspect | Pick::ServiceExecute | Pick::ServiceDelete => {
                let repo = Self::current_repo(user)?;
                AysClient
                    .list_services(&repo, None)
                    .await?
                    .into_iter()
                    .map(|s| s.key)
                    .collect()
            }
            Pick::RunInspect => {
                let repo = Self::current_repo(user)?;
                AysClient
                    .list_runs(&repo)
                    .await?
                    .into_iter()
                    .map(|r| r.key)
                    .collect()
            }
        };
        self.show(views::picker(pick, &names, page));
        Ok(())
    }

    /// A subcommand whose argument is free text: ask for it; the answer comes to [`Self::answer`].
    fn ask(&mut self, user: &AuthorizedUser, ask: Ask) -> Result<(), AysError> {
        let (prompt, question) = match ask {
            Ask::RepoName => (
                json!({"ask": "repo_name"}),
                "Send me the name of the new repository (letters, digits, - and _).".to_string(),
            ),
            Ask::BlueprintName => {
                let repo = Self::current_repo(user)?;
                (
                    json!({"ask": "blueprint_name", "repo": repo}),
                    format!("Send me the name of the new blueprint in {repo} (ending in .yaml)."),
                )
            }
        };
        self.shared
            .store
            .set_chat_pending(self.chat_id, Some(&prompt))?;
        self.say(&question);
        Ok(())
    }

    /// The answer to a question [`Self::ask`] asked.
    async fn answer(&mut self, user_id: i64, prompt: &Value, text: &str) {
        let Some(user) = self.user(user_id).await else {
            return self.unknown();
        };
        let text = text.trim();
        let result = match prompt["ask"].as_str() {
            Some("repo_name") if !crate::actors::ays::valid_repo_name(text) => {
                self.say(
                    "That is not a repository name: 1 to 64 letters, digits, - or _. Try another.",
                );
                return;
            }
            Some("repo_name") => {
                let next = json!({"ask": "git_url", "name": text});
                match self
                    .shared
                    .store
                    .set_chat_pending(self.chat_id, Some(&next))
                {
                    Ok(()) => {
                        self.say_with(
                            &format!("Send me the git URL to clone into {text}, or press Skip."),
                            vec![vec![button("Skip", "/skip")]],
                        );
                        Ok(())
                    }
                    Err(err) => Err(err.into()),
                }
            }
            Some("git_url") => {
                let _ = self.shared.store.set_chat_pending(self.chat_id, None);
                let name = prompt["name"].as_str().unwrap_or_default().to_string();
                let cmd = RepoCmd::Create {
                    name,
                    git_url: Some(text.to_string()),
                };
                self.repo(&user, cmd).await
            }
            Some("blueprint_name") => {
                let _ = self.shared.store.set_chat_pending(self.chat_id, None);
                self.blueprint(&user, BlueprintCmd::Add(text.to_string()))
                    .await
            }
            _ => {
                let _ = self.shared.store.set_chat_pending(self.chat_id, None);
                self.say("Send a command; /help lists them.");
                Ok(())
            }
        };
        if let Err(err) = result {
            self.say(&err.to_string());
        }
    }

    /// `/skip`: creates the repository whose git URL was asked, without one.
    async fn skip(&mut self, user: &AuthorizedUser) -> Result<(), AysError> {
        let prompt = self.shared.store.chat_pending(self.chat_id)?;
        let Some(name) = prompt
            .as_ref()
            .filter(|p| p["ask"] == "git_url")
            .and_then(|p| p["name"].as_str())
            .map(String::from)
        else {
            self.say("There is nothing to skip.");
            return Ok(());
        };
        self.shared.store.set_chat_pending(self.chat_id, None)?;
        self.repo(
            user,
            RepoCmd::Create {
                name,
                git_url: None,
            },
        )
        .await
    }
}

/// A keyboard button that sends `data` back as command text.
fn button(label: &str, data: &str) -> Button {
    Button {
        label: label.to_string(),
        data: data.to_string(),
    }
}
