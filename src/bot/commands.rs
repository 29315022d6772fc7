//! Bot commands: text (or a keyboard button's callback data, which is command text too) in,
//! a typed [`Command`] out, and the role each command needs ([`needs`]). No IO, no teloxide.

use crate::auth::access::Action;

/// A parsed chat input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/start`: log in, or welcome back; `/start <code>` finishes a login with the one-time
    /// code the login page showed (Telegram's `t.me/<bot>?start=<code>` links send it).
    Start(Option<String>),
    /// `/help`: the command list.
    Help,
    /// `/repo ...`.
    Repo(RepoCmd),
    /// `/blueprint ...`.
    Blueprint(BlueprintCmd),
    /// `/service ...`.
    Service(ServiceCmd),
    /// `/run ...`.
    Run(RunCmd),
    /// `/notify ...`: the failure notices of a repository in this chat.
    Notify(NotifyCmd),
    /// `/crash`: fault injection (only with `[debug].fault_injection`).
    Crash,
    /// `/token`: a new API token for the user, in their private chat.
    Token,
    /// `/confirm`: carry out the destructive command this user asked for in the last 60 s.
    Confirm,
    /// `/approve <id>`: approve, as a second admin, an action `[access].two_person` holds.
    Approve(String),
    /// A subcommand without its argument: a picker of the items it applies to (a page of it).
    Pick {
        /// What the picked item is for.
        pick: Pick,
        /// The page (1-based).
        page: usize,
    },
    /// A subcommand whose argument is free text (a new name): ask for it.
    Ask(Ask),
    /// `/skip`: leave out the optional answer a prompt waits for (a new repository's git URL).
    Skip,
    /// A command with the wrong arguments: what is wrong and the usage.
    Usage(String),
    /// A `/command` we do not know.
    Unknown(String),
    /// Plain text (the answer to a prompt, e.g. a pasted blueprint).
    Text(String),
}

/// `/notify` subcommands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyCmd {
    /// `/notify`: which repositories this chat hears about.
    Status,
    /// `on [repo]`: tell this chat when a run of the repository (the selected one by default)
    /// ends `error` or `cancelled`.
    On(Option<String>),
    /// `off [repo]`: stop telling it.
    Off(Option<String>),
}

/// `/repo` subcommands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoCmd {
    /// The menu (no arguments).
    Menu,
    /// `list [page]`.
    List(Option<usize>),
    /// `create <name> [git_url]`.
    Create {
        /// The repository name.
        name: String,
        /// A git remote to clone.
        git_url: Option<String>,
    },
    /// `select <name>`.
    Select(String),
    /// `delete <name>`.
    Delete(String),
}

/// `/blueprint` subcommands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlueprintCmd {
    /// The menu.
    Menu,
    /// `list [page]`.
    List(Option<usize>),
    /// `get <name>`.
    Get(String),
    /// `add <name>`: the YAML follows as the next message or a document.
    Add(String),
    /// `execute <name>`.
    Execute(String),
    /// `delete <name>`.
    Delete(String),
    /// `archive <name>`.
    Archive(String),
    /// `restore <name>`.
    Restore(String),
}

/// `/service` subcommands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceCmd {
    /// The menu.
    Menu,
    /// `list [page]`.
    List(Option<usize>),
    /// `inspect <role>!<name>`.
    Inspect {
        /// The role.
        role: String,
        /// The instance name.
        name: String,
    },
    /// `execute <action> <role>[!<name>] [key=value…]`.
    Execute {
        /// The action.
        action: String,
        /// The role.
        role: String,
        /// One instance, or every service of the role.
        name: Option<String>,
        /// Args for the action's job, in the order given.
        args: Vec<(String, String)>,
    },
    /// `delete <role>!<name>`.
    Delete {
        /// The role.
        role: String,
        /// The instance name.
        name: String,
    },
}

/// `/run` subcommands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunCmd {
    /// The menu.
    Menu,
    /// `list [page]`.
    List(Option<usize>),
    /// `list <state> [page]`: the runs in one state (`new`, `running`, `ok`, `error`).
    ListIn {
        /// The state.
        state: String,
        /// The page.
        page: Option<usize>,
    },
    /// `inspect <key>`.
    Inspect(String),
    /// `simulate`: the plan of the pending actions, without running it.
    Simulate,
    /// `create` or `execute`: plan the pending actions and run them.
    Execute,
    /// `cancel <key>`: cancel a running or queued run (the Cancel button of a run message).
    Cancel(String),
}

/// The run states `/run list <state>` filters on.
pub const RUN_STATES: &[&str] = &["new", "running", "ok", "error"];

/// What a picker picks for: the subcommands that take an existing item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// `/repo select`.
    RepoSelect,
    /// `/repo delete`.
    RepoDelete,
    /// `/blueprint get`.
    BlueprintGet,
    /// `/blueprint execute`.
    BlueprintExecute,
    /// `/blueprint delete`.
    BlueprintDelete,
    /// `/blueprint archive`.
    BlueprintArchive,
    /// `/blueprint restore`.
    BlueprintRestore,
    /// `/service inspect`.
    ServiceInspect,
    /// `/service execute`: a service, then one of its actions.
    ServiceExecute,
    /// `/service delete`.
    ServiceDelete,
    /// `/run inspect`.
    RunInspect,
}

impl Pick {
    /// Every picker, with its id in `/pick <id> <page>` (the ‹ › of a picker).
    pub const ALL: &[(Pick, &str)] = &[
        (Pick::RepoSelect, "repo_select"),
        (Pick::RepoDelete, "repo_delete"),
        (Pick::BlueprintGet, "bp_get"),
        (Pick::BlueprintExecute, "bp_execute"),
        (Pick::BlueprintDelete, "bp_delete"),
        (Pick::BlueprintArchive, "bp_archive"),
        (Pick::BlueprintRestore, "bp_restore"),
        (Pick::ServiceInspect, "service_inspect"),
        (Pick::ServiceExecute, "service_execute"),
        (Pick::ServiceDelete, "service_delete"),
        (Pick::RunInspect, "run_inspect"),
    ];

    /// Its id in `/pick <id> <page>`.
    pub fn id(self) -> &'static str {
        Pick::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("", |(_, id)| id)
    }

    /// The command a picked item completes (`/repo select` + ` <name>`). Executing on a service
    /// first shows the service, whose buttons are its actions.
    pub fn command(self) -> &'static str {
        match self {
            Pick::RepoSelect => "/repo select",
            Pick::RepoDelete => "/repo delete",
            Pick::BlueprintGet => "/blueprint get",
            Pick::BlueprintExecute => "/blueprint execute",
            Pick::BlueprintDelete => "/blueprint delete",
            Pick::BlueprintArchive => "/blueprint archive",
            Pick::BlueprintRestore => "/blueprint restore",
            Pick::ServiceInspect | Pick::ServiceExecute => "/service inspect",
            Pick::ServiceDelete => "/service delete",
            Pick::RunInspect => "/run inspect",
        }
    }

    /// The question above the picker.
    pub fn question(self) -> &'static str {
        match self {
            Pick::RepoSelect => "Which repository do you want to work on?",
            Pick::RepoDelete => "Which repository do you want to delete?",
            Pick::BlueprintGet => "Which blueprint do you want to see?",
            Pick::BlueprintExecute => "Which blueprint do you want to execute?",
            Pick::BlueprintDelete => "Which blueprint do you want to delete?",
            Pick::BlueprintArchive => "Which blueprint do you want to archive?",
            Pick::BlueprintRestore => "Which archived blueprint do you want to restore?",
            Pick::ServiceInspect => "Which service do you want to inspect?",
            Pick::ServiceExecute => "On which service do you want to run an action?",
            Pick::ServiceDelete => "Which service do you want to delete?",
            Pick::RunInspect => "Which run do you want to inspect?",
        }
    }
}

/// A question whose answer is free text, asked by a subcommand without its argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// `/repo create`: the new repository's name (then its optional git URL).
    RepoName,
    /// `/blueprint add`: the new blueprint's name (then its YAML).
    BlueprintName,
}

/// The subcommands a bare command offers as buttons: (label, command text).
pub fn menu(command: &str) -> &'static [(&'static str, &'static str)] {
    match command {
        "repo" => &[
            ("List", "/repo list"),
            ("Create", "/repo create"),
            ("Select", "/repo select"),
            ("Delete", "/repo delete"),
        ],
        "blueprint" => &[
            ("List", "/blueprint list"),
            ("Get", "/blueprint get"),
            ("Add", "/blueprint add"),
            ("Execute", "/blueprint execute"),
            ("Archive", "/blueprint archive"),
            ("Restore", "/blueprint restore"),
            ("Delete", "/blueprint delete"),
        ],
        "service" => &[
            ("List", "/service list"),
            ("Inspect", "/service inspect"),
            ("Execute", "/service execute"),
            ("Delete", "/service delete"),
        ],
        "run" => &[
            ("List", "/run list"),
            ("Inspect", "/run inspect"),
            ("Simulate", "/run simulate"),
            ("Create", "/run create"),
            ("Execute", "/run execute"),
        ],
        _ => &[],
    }
}

/// The commands registered with `setMyCommands`, with their descriptions.
pub const COMMANDS: &[(&str, &str)] = &[
    ("start", "Log in"),
    ("repo", "Manage your AYS repositories"),
    ("blueprint", "Manage your blueprints"),
    ("service", "Perform actions on your service instances"),
    ("run", "Look at runs"),
    ("notify", "Hear about failed runs of a repository"),
    ("token", "Get an API token for the REST API"),
    ("help", "Show what I can do"),
];

/// The `/help` text (plain; the renderer escapes it).
pub const HELP: &str = "I can drive your AYS repositories:\n\
/start - log in\n\
/repo list | create <name> [git_url] | select <name> | delete <name>\n\
/blueprint list | get <name> | add <name> | execute <name> | delete <name> | archive <name> | restore <name>\n\
/service list | inspect <role>!<name> | execute <action> <role>[!<name>] [key=value…] | delete <role>!<name>\n\
/run list [new|running|ok|error] | inspect <key> | simulate | create | execute\n\
/notify on [repo] | off [repo] - hear here when a run fails or is cancelled\n\
/token - an API token for the REST API, with your role (in a private chat)\n\
/approve <id> - approve, as a second admin, an action held for approval\n\
/help - this list\n\
Every command without arguments shows a menu.";

/// The action a command is (and so the role it needs: [`Action::role`]), or `None` for
/// commands anyone may send (`/start`, `/help`, unknown ones). The one table of the bot's roles:
/// viewers read, operators add and execute blueprints, run and execute service actions, admins
/// create and delete repositories and delete blueprints and services.
pub fn needs(command: &Command) -> Option<Action> {
    use Action as A;
    Some(match command {
        Command::Start(_)
        | Command::Help
        | Command::Confirm
        | Command::Crash
        | Command::Usage(_)
        | Command::Unknown(_)
        | Command::Text(_) => return None,
        Command::Token => A::TokenCreate,
        Command::Approve(_) => A::ApprovalApprove,
        Command::Skip => A::RepoCreate,
        Command::Ask(Ask::RepoName) => A::RepoCreate,
        Command::Ask(Ask::BlueprintName) => A::BlueprintAdd,
        Command::Pick { pick, .. } => match pick {
            Pick::RepoDelete => A::RepoDelete,
            Pick::BlueprintExecute => A::BlueprintExecute,
            Pick::BlueprintDelete => A::BlueprintDelete,
            Pick::BlueprintArchive => A::BlueprintArchive,
            Pick::BlueprintRestore => A::BlueprintRestore,
            Pick::ServiceExecute => A::ServiceExecute,
            Pick::ServiceDelete => A::ServiceDelete,
            Pick::RepoSelect | Pick::BlueprintGet | Pick::ServiceInspect | Pick::RunInspect => {
                A::Read
            }
        },
        Command::Repo(cmd) => match cmd {
            RepoCmd::Menu | RepoCmd::List(_) | RepoCmd::Select(_) => A::Read,
            RepoCmd::Create { .. } => A::RepoCreate,
            RepoCmd::Delete(_) => A::RepoDelete,
        },
        Command::Blueprint(cmd) => match cmd {
            BlueprintCmd::Menu | BlueprintCmd::List(_) | BlueprintCmd::Get(_) => A::Read,
            BlueprintCmd::Add(_) => A::BlueprintAdd,
            BlueprintCmd::Execute(_) => A::BlueprintExecute,
            BlueprintCmd::Delete(_) => A::BlueprintDelete,
            BlueprintCmd::Archive(_) => A::BlueprintArchive,
            BlueprintCmd::Restore(_) => A::BlueprintRestore,
        },
        Command::Service(cmd) => match cmd {
            ServiceCmd::Menu | ServiceCmd::List(_) | ServiceCmd::Inspect { .. } => A::Read,
            ServiceCmd::Execute { .. } => A::ServiceExecute,
            ServiceCmd::Delete { .. } => A::ServiceDelete,
        },
        Command::Run(cmd) => match cmd {
            RunCmd::Menu
            | RunCmd::List(_)
            | RunCmd::ListIn { .. }
            | RunCmd::Inspect(_)
            | RunCmd::Simulate => A::Read,
            RunCmd::Execute => A::RunCreate,
            RunCmd::Cancel(_) => A::RunCancel,
        },
        Command::Notify(cmd) => match cmd {
            NotifyCmd::Status => A::Read,
            NotifyCmd::On(_) | NotifyCmd::Off(_) => A::NotifySet,
        },
    })
}

/// How long a destructive command waits for its confirmation.
pub const CONFIRM_MS: i64 = 60_000;

/// The text of a destructive command, which waits for a Confirm button from the same user
/// (`/repo delete`, `/blueprint delete`, `/service delete`); `None` for every other command.
pub fn destructive(command: &Command) -> Option<String> {
    match command {
        Command::Repo(RepoCmd::Delete(name)) => Some(format!("/repo delete {name}")),
        Command::Blueprint(BlueprintCmd::Delete(name)) => Some(format!("/blueprint delete {name}")),
        Command::Service(ServiceCmd::Delete { role, name }) => {
            Some(format!("/service delete {role}!{name}"))
        }
        _ => None,
    }
}

/// The command a stored confirmation (`{"confirm", "user_id", "expires_ms"}`) lets `user_id`
/// carry out at `now_ms`: only its own user's, and only before it expires.
pub fn confirmed(pending: &serde_json::Value, user_id: i64, now_ms: i64) -> Option<String> {
    let text = pending["confirm"].as_str()?;
    let mine = pending["user_id"].as_i64() == Some(user_id);
    let fresh = pending["expires_ms"].as_i64().is_some_and(|t| now_ms < t);
    (mine && fresh).then(|| text.to_string())
}

/// What a command acts on, for the audit trail: `demo`, `demo/web.yaml`, `demo/node/main`.
pub fn target(command: &Command, repo: Option<&str>) -> String {
    let repo = repo.unwrap_or("-");
    match command {
        Command::Repo(RepoCmd::Create { name, .. })
        | Command::Repo(RepoCmd::Select(name))
        | Command::Repo(RepoCmd::Delete(name)) => name.clone(),
        Command::Blueprint(
            BlueprintCmd::Get(name)
            | BlueprintCmd::Add(name)
            | BlueprintCmd::Execute(name)
            | BlueprintCmd::Delete(name)
            | BlueprintCmd::Archive(name)
            | BlueprintCmd::Restore(name),
        ) => format!("{repo}/{name}"),
        Command::Service(
            ServiceCmd::Inspect { role, name } | ServiceCmd::Delete { role, name },
        ) => {
            format!("{repo}/{role}/{name}")
        }
        Command::Service(ServiceCmd::Execute {
            action, role, name, ..
        }) => {
            format!("{repo}/{role}/{}/{action}", name.as_deref().unwrap_or("*"))
        }
        // As REST names it: which run.
        Command::Run(RunCmd::Cancel(key) | RunCmd::Inspect(key)) => format!("{repo}/{key}"),
        _ => repo.to_string(),
    }
}

/// Parses one input.
pub fn parse(input: &str) -> Command {
    let input = input.trim();
    let Some(rest) = input.strip_prefix('/') else {
        return Command::Text(input.to_string());
    };
    let mut words = rest.split_whitespace();
    let head = words.next().unwrap_or_default();
    // `/repo@cockpit_bot list` in groups.
    let name = head
        .split('@')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    match name.as_str() {
        "start" => Command::Start(args.first().map(|code| code.to_string())),
        "help" => Command::Help,
        "crash" => Command::Crash,
        "token" => Command::Token,
        "confirm" => Command::Confirm,
        "approve" => match args.as_slice() {
            [id] => Command::Approve(id.to_string()),
            _ => Command::Usage("/approve <id>".into()),
        },
        "skip" => Command::Skip,
        "repo" => repo(&args),
        "blueprint" | "bp" => blueprint(&args),
        "service" => service(&args),
        "run" => run(&args),
        "notify" => match args.as_slice() {
            [] => Command::Notify(NotifyCmd::Status),
            ["on"] => Command::Notify(NotifyCmd::On(None)),
            ["off"] => Command::Notify(NotifyCmd::Off(None)),
            ["on", repo] => Command::Notify(NotifyCmd::On(Some(repo.to_string()))),
            ["off", repo] => Command::Notify(NotifyCmd::Off(Some(repo.to_string()))),
            _ => Command::Usage("/notify on [repo] | /notify off [repo]".into()),
        },
        // The ‹ › of a picker.
        "pick" => match args.as_slice() {
            [id, page] => match (
                Pick::ALL.iter().find(|(_, i)| i == id),
                page.parse::<usize>(),
            ) {
                (Some((pick, _)), Ok(page)) => Command::Pick { pick: *pick, page },
                _ => Command::Unknown(head.to_string()),
            },
            _ => Command::Unknown(head.to_string()),
        },
        _ => Command::Unknown(head.to_string()),
    }
}

/// `list [page]`: the page a list's ‹ › buttons ask for (1-based).
fn page(args: &[&str], usage: &str) -> Result<Option<usize>, Command> {
    match args {
        [_] => Ok(None),
        [_, page] => page
            .parse()
            .map(Some)
            .map_err(|_| Command::Usage(usage.to_string())),
        _ => Err(Command::Usage(usage.to_string())),
    }
}

fn pick(pick: Pick) -> Command {
    Command::Pick { pick, page: 1 }
}

fn one<'a>(args: &[&'a str], usage: &str) -> Result<&'a str, Command> {
    match args {
        [_, value] => Ok(value),
        _ => Err(Command::Usage(usage.to_string())),
    }
}

fn repo(args: &[&str]) -> Command {
    let cmd = match args.first().map(|s| s.to_ascii_lowercase()).as_deref() {
        None => Ok(RepoCmd::Menu),
        Some("list") => page(args, "/repo list [page]").map(RepoCmd::List),
        Some("create") => match args {
            [_] => return Command::Ask(Ask::RepoName),
            [_, name] => Ok(RepoCmd::Create {
                name: name.to_string(),
                git_url: None,
            }),
            [_, name, url] => Ok(RepoCmd::Create {
                name: name.to_string(),
                git_url: Some(url.to_string()),
            }),
            _ => Err(Command::Usage("/repo create <name> [git_url]".into())),
        },
        Some("select") if args.len() == 1 => return pick(Pick::RepoSelect),
        Some("delete") if args.len() == 1 => return pick(Pick::RepoDelete),
        Some("select") => one(args, "/repo select <name>").map(|n| RepoCmd::Select(n.into())),
        Some("delete") => one(args, "/repo delete <name>").map(|n| RepoCmd::Delete(n.into())),
        Some(_) => Err(Command::Usage(
            "/repo list | create <name> [git_url] | select <name> | delete <name>".into(),
        )),
    };
    cmd.map(Command::Repo).unwrap_or_else(|usage| usage)
}

fn blueprint(args: &[&str]) -> Command {
    let sub = args.first().map(|s| s.to_ascii_lowercase());
    let named = |usage: &str, make: fn(String) -> BlueprintCmd| {
        one(args, usage).map(|n| make(n.to_string()))
    };
    if args.len() == 1 {
        let bare = match sub.as_deref() {
            Some("get") => Some(pick(Pick::BlueprintGet)),
            Some("execute") => Some(pick(Pick::BlueprintExecute)),
            Some("delete") => Some(pick(Pick::BlueprintDelete)),
            Some("archive") => Some(pick(Pick::BlueprintArchive)),
            Some("restore") => Some(pick(Pick::BlueprintRestore)),
            Some("add") => Some(Command::Ask(Ask::BlueprintName)),
            _ => None,
        };
        if let Some(bare) = bare {
            return bare;
        }
    }
    let cmd = match sub.as_deref() {
        None => Ok(BlueprintCmd::Menu),
        Some("list") => page(args, "/blueprint list [page]").map(BlueprintCmd::List),
        Some("get") => named("/blueprint get <name>", BlueprintCmd::Get),
        Some("add") => named("/blueprint add <name>", BlueprintCmd::Add),
        Some("execute") => named("/blueprint execute <name>", BlueprintCmd::Execute),
        Some("delete") => named("/blueprint delete <name>", BlueprintCmd::Delete),
        Some("archive") => named("/blueprint archive <name>", BlueprintCmd::Archive),
        Some("restore") => named("/blueprint restore <name>", BlueprintCmd::Restore),
        Some(_) => Err(Command::Usage(
            "/blueprint list | get | add | execute | delete | archive | restore <name>".into(),
        )),
    };
    cmd.map(Command::Blueprint).unwrap_or_else(|usage| usage)
}

/// Splits `role!name`.
fn role_name(value: &str) -> Option<(String, String)> {
    let (role, name) = value.split_once('!')?;
    (!role.is_empty() && !name.is_empty()).then(|| (role.to_string(), name.to_string()))
}

fn service(args: &[&str]) -> Command {
    let sub = args.first().map(|s| s.to_ascii_lowercase());
    if args.len() == 1 {
        match sub.as_deref() {
            Some("inspect") => return pick(Pick::ServiceInspect),
            Some("execute") => return pick(Pick::ServiceExecute),
            Some("delete") => return pick(Pick::ServiceDelete),
            _ => {}
        }
    }
    let cmd = match sub.as_deref() {
        None => Ok(ServiceCmd::Menu),
        Some("list") => page(args, "/service list [page]").map(ServiceCmd::List),
        Some("inspect") => one(args, "/service inspect <role>!<name>")
            .and_then(|v| {
                role_name(v).ok_or(Command::Usage("/service inspect <role>!<name>".into()))
            })
            .map(|(role, name)| ServiceCmd::Inspect { role, name }),
        Some("delete") => one(args, "/service delete <role>!<name>")
            .and_then(|v| {
                role_name(v).ok_or(Command::Usage("/service delete <role>!<name>".into()))
            })
            .map(|(role, name)| ServiceCmd::Delete { role, name }),
        Some("execute") => {
            const USAGE: &str = "/service execute <action> <role>[!<name>] [key=value…]";
            match args {
                [_, action, target, rest @ ..] => {
                    let (role, name) = match role_name(target) {
                        Some((role, name)) => (role, Some(name)),
                        None => (target.trim_end_matches('!').to_string(), None),
                    };
                    let pairs: Option<Vec<(String, String)>> = rest
                        .iter()
                        .map(|kv| {
                            kv.split_once('=')
                                .filter(|(k, _)| !k.is_empty())
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                        })
                        .collect();
                    match pairs {
                        Some(args) => Ok(ServiceCmd::Execute {
                            action: action.to_string(),
                            role,
                            name,
                            args,
                        }),
                        None => Err(Command::Usage(USAGE.into())),
                    }
                }
                _ => Err(Command::Usage(USAGE.into())),
            }
        }
        Some(_) => Err(Command::Usage(
            "/service list | inspect <role>!<name> | execute <action> <role>[!<name>] | delete <role>!<name>".into(),
        )),
    };
    cmd.map(Command::Service).unwrap_or_else(|usage| usage)
}

fn run(args: &[&str]) -> Command {
    let cmd = match args.first().map(|s| s.to_ascii_lowercase()).as_deref() {
        None => Ok(RunCmd::Menu),
        Some("list") => match args {
            [_, state] | [_, state, _] if RUN_STATES.contains(state) => {
                let page = match args {
                    [_, _, page] => page.parse().ok(),
                    _ => None,
                };
                Ok(RunCmd::ListIn {
                    state: state.to_string(),
                    page,
                })
            }
            _ => page(args, "/run list [new|running|ok|error] [page]").map(RunCmd::List),
        },
        Some("inspect") if args.len() == 1 => return pick(Pick::RunInspect),
        Some("inspect") => one(args, "/run inspect <key>").map(|k| RunCmd::Inspect(k.into())),
        Some("simulate") => Ok(RunCmd::Simulate),
        Some("create" | "execute") => Ok(RunCmd::Execute),
        Some("cancel") => one(args, "/run cancel <key>").map(|k| RunCmd::Cancel(k.into())),
        Some(_) => Err(Command::Usage(
            "/run list [new|running|ok|error] | inspect <key> | simulate | create | execute".into(),
        )),
    };
    cmd.map(Command::Run).unwrap_or_else(|usage| usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Command) {
        assert_eq!(parse(input), expected, "{input}");
    }

    #[test]
    fn commands_parse_with_and_without_arguments() {
        check("/start", Command::Start(None));
        check("/start 0123abc", Command::Start(Some("0123abc".into())));
        check("  /HELP ", Command::Help);
        check("/repo", Command::Repo(RepoCmd::Menu));
        check("/repo@cockpit_bot list", Command::Repo(RepoCmd::List(None)));
        check("/repo list 3", Command::Repo(RepoCmd::List(Some(3))));
        check("/run list 2", Command::Run(RunCmd::List(Some(2))));
        check(
            "/repo create demo",
            Command::Repo(RepoCmd::Create {
                name: "demo".into(),
                git_url: None,
            }),
        );
        check(
            "/repo create demo https://git.example.com/x.git",
            Command::Repo(RepoCmd::Create {
                name: "demo".into(),
                git_url: Some("https://git.example.com/x.git".into()),
            }),
        );
        check(
            "/repo select demo",
            Command::Repo(RepoCmd::Select("demo".into())),
        );
        check(
            "/blueprint add web.yaml",
            Command::Blueprint(BlueprintCmd::Add("web.yaml".into())),
        );
        check(
            "/blueprint execute web.yaml",
            Command::Blueprint(BlueprintCmd::Execute("web.yaml".into())),
        );
        check(
            "/service inspect node!main",
            Command::Service(ServiceCmd::Inspect {
                role: "node".into(),
                name: "main".into(),
            }),
        );
        check(
            "/service execute install node!main",
            Command::Service(ServiceCmd::Execute {
                action: "install".into(),
                role: "node".into(),
                name: Some("main".into()),
                args: Vec::new(),
            }),
        );
        check(
            "/service execute backup node!main target=s3 level=9",
            Command::Service(ServiceCmd::Execute {
                action: "backup".into(),
                role: "node".into(),
                name: Some("main".into()),
                args: vec![("target".into(), "s3".into()), ("level".into(), "9".into())],
            }),
        );
        check(
            "/service execute backup node!main =s3",
            Command::Usage("/service execute <action> <role>[!<name>] [key=value…]".into()),
        );
        check(
            "/service execute install node",
            Command::Service(ServiceCmd::Execute {
                action: "install".into(),
                role: "node".into(),
                name: None,
                args: Vec::new(),
            }),
        );
        check(
            "/run inspect abc",
            Command::Run(RunCmd::Inspect("abc".into())),
        );
        check(
            "/run cancel 0123456789abcdef",
            Command::Run(RunCmd::Cancel("0123456789abcdef".into())),
        );
        check("/notify", Command::Notify(NotifyCmd::Status));
        check("/notify on", Command::Notify(NotifyCmd::On(None)));
        check(
            "/notify on nightly",
            Command::Notify(NotifyCmd::On(Some("nightly".into()))),
        );
        check(
            "/notify off nightly",
            Command::Notify(NotifyCmd::Off(Some("nightly".into()))),
        );
        check(
            "/notify maybe",
            Command::Usage("/notify on [repo] | /notify off [repo]".into()),
        );
        check("hello: world", Command::Text("hello: world".into()));
    }

    #[test]
    fn a_confirmation_holds_for_its_user_for_60_seconds() {
        let text = destructive(&parse("/repo delete demo")).expect("destructive");
        assert_eq!(text, "/repo delete demo");
        assert_eq!(destructive(&parse("/repo select demo")), None);
        assert_eq!(
            destructive(&parse("/service delete web!site")).as_deref(),
            Some("/service delete web!site")
        );
        let pending =
            serde_json::json!({"confirm": text, "user_id": 7, "expires_ms": 1_000 + CONFIRM_MS});
        assert_eq!(
            confirmed(&pending, 7, 1_000).as_deref(),
            Some("/repo delete demo")
        );
        assert_eq!(
            confirmed(&pending, 7, 1_000 + CONFIRM_MS - 1).as_deref(),
            Some("/repo delete demo")
        );
        assert_eq!(confirmed(&pending, 7, 1_000 + CONFIRM_MS), None, "expired");
        assert_eq!(confirmed(&pending, 8, 1_000), None, "another user");
        assert_eq!(
            confirmed(&serde_json::json!({"ask": "repo_name"}), 7, 1_000),
            None
        );
    }

    #[test]
    fn every_command_states_its_role() {
        use crate::auth::access::Role;
        let check = |input: &str, role: Option<Role>| {
            assert_eq!(needs(&parse(input)).map(Action::role), role, "{input}");
        };
        check("/start", None);
        check("/help", None);
        check("/repo list", Some(Role::Viewer));
        check("/repo select demo", Some(Role::Viewer));
        check("/repo create demo", Some(Role::Admin));
        check("/repo create", Some(Role::Admin));
        check("/repo delete demo", Some(Role::Admin));
        check("/repo delete", Some(Role::Admin));
        check("/blueprint get a.yaml", Some(Role::Viewer));
        check("/blueprint add a.yaml", Some(Role::Operator));
        check("/blueprint execute a.yaml", Some(Role::Operator));
        check("/blueprint delete a.yaml", Some(Role::Admin));
        check("/service inspect a!b", Some(Role::Viewer));
        check("/service execute install a!b", Some(Role::Operator));
        check("/service delete a!b", Some(Role::Admin));
        check("/run list", Some(Role::Viewer));
        check("/run simulate", Some(Role::Viewer));
        check("/run execute", Some(Role::Operator));
        check("/token", Some(Role::Viewer));
        check("/approve apr_1", Some(Role::Admin));
    }

    #[test]
    fn wrong_arguments_get_the_usage_and_unknown_commands_are_named() {
        check("/repo create", Command::Ask(Ask::RepoName));
        check("/blueprint add", Command::Ask(Ask::BlueprintName));
        check(
            "/repo select",
            Command::Pick {
                pick: Pick::RepoSelect,
                page: 1,
            },
        );
        check(
            "/pick bp_restore 3",
            Command::Pick {
                pick: Pick::BlueprintRestore,
                page: 3,
            },
        );
        check("/pick nothing 3", Command::Unknown("pick".into()));
        check(
            "/run list error 2",
            Command::Run(RunCmd::ListIn {
                state: "error".into(),
                page: Some(2),
            }),
        );
        check("/run create", Command::Run(RunCmd::Execute));
        check("/skip", Command::Skip);
        check(
            "/run list ok",
            Command::Run(RunCmd::ListIn {
                state: "ok".into(),
                page: None,
            }),
        );
        check("/run simulate", Command::Run(RunCmd::Simulate));
        check(
            "/service inspect nobang",
            Command::Usage("/service inspect <role>!<name>".into()),
        );
        check(
            "/run fly",
            Command::Usage(
                "/run list [new|running|ok|error] | inspect <key> | simulate | create | execute"
                    .into(),
            ),
        );
        check("/frobnicate now", Command::Unknown("frobnicate".into()));
        check(
            "/service list two",
            Command::Usage("/service list [page]".into()),
        );
        check("/", Command::Unknown(String::new()));
    }
}
