//! Who may do what: a [`Principal`] (an identity and its groups, whoever logged it in) gets a
//! [`Role`] from `[access]`, and every command is an [`Action`] that needs a role. No IO: the
//! doors build the principal, this module decides.

/// Someone acting on cockpit, as a door knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `github:alice`, `itsyouonline:bob`, `mail:ops@example.com`, `cli:root`.
    pub identity: String,
    /// The groups the identity provider vouches for (`myorg`, `myorg/ops`), without `group:`.
    pub groups: Vec<String>,
}

impl Principal {
    /// A principal of an identity and its groups.
    pub fn new(identity: impl Into<String>, groups: Vec<String>) -> Principal {
        Principal {
            identity: identity.into(),
            groups,
        }
    }
}

/// What a principal may do; each role may do everything the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads; adds and executes blueprints, starts and cancels runs, executes service actions.
    Operator,
    /// Everything: creates and deletes repositories, deletes blueprints and services, manages
    /// tokens and users, reads the audit trail.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// `viewer`, `operator`, `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The role of its name.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! actions {
    ($($variant:ident = $name:literal, $role:ident;)*) => {
        /// A command that changes something, as the audit trail names it (a closed set), with
        /// the role it needs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl Action {
            /// Every action.
            pub const ALL: &[Action] = &[$(Action::$variant),*];

            /// Its name in the audit trail and in `[access].two_person`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }

            /// The role it needs.
            pub fn role(self) -> Role {
                match self {
                    $(Action::$variant => Role::$role,)*
                }
            }
        }
    };
}

actions! {
    Read = "read", Viewer;
    AuditRead = "audit.read", Admin;
    TokenList = "token.list", Viewer;
    UserList = "user.list", Admin;
    ApprovalApprove = "approval.approve", Admin;
    RepoCreate = "repo.create", Admin;
    RepoDelete = "repo.delete", Admin;
    BlueprintAdd = "blueprint.add", Operator;
    BlueprintExecute = "blueprint.execute", Operator;
    BlueprintArchive = "blueprint.archive", Operator;
    BlueprintRestore = "blueprint.restore", Operator;
    BlueprintDelete = "blueprint.delete", Admin;
    ServiceExecute = "service.execute", Operator;
    ServiceDelete = "service.delete", Admin;
    RunCreate = "run.create", Operator;
    RunCancel = "run.cancel", Operator;
    TokenCreate = "token.create", Viewer;
    TokenRevoke = "token.revoke", Viewer;
    UserRevoke = "user.revoke", Admin;
    MailReceive = "mail.receive", Viewer;
    CacheClean = "cache.clean", Admin;
    EventRaise = "event.raise", Operator;
    NotifySet = "notify.set", Viewer;
}

impl Action {
    /// The action of its name.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.iter().copied().find(|a| a.as_str() == name)
    }

    /// Whether it changes something (then it is audited also when allowed; a read is audited
    /// only when denied).
    pub fn changes(self) -> bool {
        !matches!(
            self,
            Action::Read | Action::AuditRead | Action::TokenList | Action::UserList
        )
    }

    /// Whether `[access].two_person` may hold it: the deletions.
    pub fn holdable(self) -> bool {
        matches!(
            self,
            Action::RepoDelete | Action::BlueprintDelete | Action::ServiceDelete
        )
    }

    /// Every action's name.
    pub fn names() -> Vec<&'static str> {
        Action::ALL.iter().map(|a| a.as_str()).collect()
    }
}

/// `[access]`: identities (`github:alice`, `itsyouonline:bob`) and groups (`group:myorg`,
/// `group:myorg/ops`) per role, and the actions that need a second admin.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// Who may read.
    pub viewer: Vec<String>,
    /// Who may also add and execute blueprints, start and cancel runs, execute service actions.
    pub operator: Vec<String>,
    /// Who may do everything.
    pub admin: Vec<String>,
    /// Actions (`repo.delete`...) held until a second admin approves.
    pub two_person: Vec<String>,
}

/// The role mapping of one configuration.
#[derive(Debug, Clone)]
pub struct Access {
    /// `[access]`, or `None`: then members of `organization` are admins.
    table: Option<AccessConfig>,
    /// `[oauth].organization`.
    organization: String,
}

impl Access {
    /// The mapping of `[access]` (`None`: the section is absent) and `[oauth].organization`.
    pub fn new(table: Option<AccessConfig>, organization: String) -> Access {
        Access {
            table,
            organization,
        }
    }

    /// The highest role the principal's identity or one of its groups is given, or `None`.
    pub fn role(&self, who: &Principal) -> Option<Role> {
        let Some(table) = &self.table else {
            let member = !self.organization.is_empty() && who.groups.contains(&self.organization);
            return member.then_some(Role::Admin);
        };
        let matches = |entries: &[String]| {
            entries
                .iter()
                .any(|entry| match entry.strip_prefix("group:") {
                    Some(group) => who.groups.iter().any(|g| g == group),
                    None => *entry == who.identity,
                })
        };
        [
            (Role::Admin, &table.admin),
            (Role::Operator, &table.operator),
            (Role::Viewer, &table.viewer),
        ]
        .into_iter()
        .find(|(_, entries)| matches(entries))
        .map(|(role, _)| role)
    }

    /// Whether `[access].two_person` holds `action` until a second admin approves.
    pub fn two_person(&self, action: Action) -> bool {
        self.table
            .as_ref()
            .is_some_and(|t| t.two_person.iter().any(|a| a == action.as_str()))
    }
}

/// Why a principal may not do something: names the role it needs.
pub fn refusal(needed: Role, has: Option<Role>) -> String {
    match has {
        Some(has) => format!("this needs the {needed} role; you have {has}"),
        None => format!("this needs the {needed} role; you have no role here"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules of `[access]` with these lists (`None`: no `[access]`), organization `myorg`.
    fn access(lists: Option<[&[&str]; 4]>) -> Access {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        let table = lists.map(|[viewer, operator, admin, two_person]| AccessConfig {
            viewer: strings(viewer),
            operator: strings(operator),
            admin: strings(admin),
            two_person: strings(two_person),
        });
        Access::new(table, "myorg".into())
    }

    fn who(identity: &str, groups: &[&str]) -> Principal {
        Principal::new(identity, groups.iter().map(|g| g.to_string()).collect())
    }

    #[test]
    fn roles_come_from_identities_and_groups() {
        let table = access(Some([
            &["group:myorg"],
            &["group:myorg/ops"],
            &["github:alice", "group:myorg/admins"],
            &[],
        ]));
        let cases: &[(&str, &[&str], Option<Role>)] = &[
            ("github:alice", &[], Some(Role::Admin)),
            ("github:bob", &["myorg"], Some(Role::Viewer)),
            ("github:bob", &["myorg", "myorg/ops"], Some(Role::Operator)),
            ("itsyouonline:carol", &["myorg/admins"], Some(Role::Admin)),
            ("github:mallory", &["otherorg"], None),
            // A group name is not an identity and an identity is not a group.
            ("group:myorg", &[], None),
            ("github:eve", &["github:alice"], None),
            ("itsyouonline:alice", &[], None),
        ];
        for (identity, groups, expected) in cases {
            assert_eq!(
                table.role(&who(identity, groups)),
                *expected,
                "{identity} {groups:?}"
            );
        }
    }

    #[test]
    fn without_access_members_of_the_organization_are_admins() {
        let table = access(None);
        assert_eq!(
            table.role(&who("itsyouonline:bob", &["myorg"])),
            Some(Role::Admin)
        );
        assert_eq!(table.role(&who("itsyouonline:bob", &["other"])), None);
        assert!(!table.two_person(Action::RepoDelete));
    }

    #[test]
    fn roles_are_ordered_and_actions_named() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(Action::parse("run.cancel"), Some(Action::RunCancel));
        assert_eq!(Action::RepoDelete.role(), Role::Admin);
        assert_eq!(Action::BlueprintExecute.role(), Role::Operator);
        let two = access(Some([&[], &[], &["github:a"], &["repo.delete"]]));
        assert!(two.two_person(Action::RepoDelete));
        assert!(!two.two_person(Action::RepoCreate));
    }
}
