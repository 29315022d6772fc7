//! Revoked identities, as the REST door checks JWTs against them.
//!
//! `DELETE /auth/users/{identity}` and `cockpit users revoke` (perhaps in another process than
//! the server) record a revocation in the store (`revoked_identities`). A JWT of a revoked
//! identity is refused when it was issued (`iat`) at or before the revocation's second, or when
//! it has no `iat` and the identity has not logged in through cockpit since (its age is
//! unknown; a login through the bot lifts that part). A JWT issued after the revocation works:
//! revoking logs a person out, it does not ban them (that is `[access]`'s job).
//!
//! Every authenticated JWT request asks [`Revocations::refuses`], so it must stay cheap: the
//! table is held in memory and read again only when the store's *revocation bell* (a file next
//! to the database to which every writer appends a byte after committing) has grown. A
//! revocation by this process (`DELETE /auth/users/…`) is heard at once through the store's
//! in-memory ring count; the file (rung by another process: `cockpit users revoke`) is looked at
//! with one `fstat` at most every [`LOOK_EVERY`] (under load, a `fstat` per request was a tenth
//! of an authed request's cost). No SQL, no store lock.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::store::{Store, StoreError};

/// One revoked identity, in seconds as JWT times are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Revoked {
    /// JWTs issued at or before this second are refused.
    at_secs: u64,
    /// Whether JWTs without `iat` are accepted again (a login through cockpit since).
    lifted: bool,
}

/// How often the bell file is looked at (a revocation by another process is heard by the
/// requests that come this long after it, at most).
pub const LOOK_EVERY: Duration = Duration::from_millis(1);

/// The revoked identities of one store, refreshed when its bell rings.
pub struct Revocations {
    /// Where the table is read from.
    store: Store,
    /// How often the bell file is looked at.
    look_every: Duration,
    /// When it was opened: the zero of `looked`.
    opened: Instant,
    /// When the bell file was last looked at, in nanoseconds after `opened`.
    looked: AtomicU64,
    /// The store's in-process ring count when the table was last read.
    rings_heard: AtomicU64,
    /// The bell, open; reopened when it was deleted (its link count is 0).
    bell: RwLock<File>,
    /// The bell's length when the table was last read (`u64::MAX`: never read).
    heard: AtomicU64,
    /// Identity → its revocation.
    revoked: RwLock<HashMap<String, Revoked>>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("revoked", &self.revoked.read().len())
            .finish_non_exhaustive()
    }
}

impl Revocations {
    /// Opens the bell (creating it) and reads the table.
    pub fn open(store: Store) -> Result<Revocations, StoreError> {
        Revocations::looking_every(store, LOOK_EVERY)
    }

    /// [`Revocations::open`], looking at the bell file every `look_every`.
    fn looking_every(store: Store, look_every: Duration) -> Result<Revocations, StoreError> {
        let bell = store.open_revocation_bell()?;
        let revocations = Revocations {
            look_every,
            opened: Instant::now(),
            looked: AtomicU64::new(0),
            rings_heard: AtomicU64::new(store.revocation_rings()),
            store,
            bell: RwLock::new(bell),
            heard: AtomicU64::new(u64::MAX),
            revoked: RwLock::new(HashMap::new()),
        };
        revocations.listen()?;
        Ok(revocations)
    }

    /// Whether a verified JWT of `identity` issued at `iat` is refused because the identity was
    /// revoked after it was issued. The table is read again first if the bell rang; if that
    /// read fails, the last table read stands (and the read is tried again next time).
    pub fn refuses(&self, identity: &str, iat: Option<u64>) -> bool {
        let rings = self.store.revocation_rings();
        let now = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let due = now.saturating_sub(self.looked.load(Ordering::Relaxed))
            >= u64::try_from(self.look_every.as_nanos()).unwrap_or(u64::MAX);
        if due || rings != self.rings_heard.load(Ordering::Acquire) {
            self.looked.store(now, Ordering::Relaxed);
            // Before the read: a ring after it is heard by the next request.
            self.rings_heard.store(rings, Ordering::Release);
            if let Err(err) = self.listen() {
                tracing::error!(%err, "cannot read the revoked identities; using the last ones read");
            }
        }
        let revoked = self.revoked.read();
        match (revoked.get(identity), iat) {
            (None, _) => false,
            (Some(revoked), Some(iat)) => iat <= revoked.at_secs,
            (Some(revoked), None) => !revoked.lifted,
        }
    }

    /// Reads the table again when the bell's length changed since the last read.
    fn listen(&self) -> Result<(), StoreError> {
        let failed = |source| StoreError::Bell {
            path: self.store.revocation_bell_path(),
            source,
        };
        let meta = self.bell.read().metadata().map_err(failed)?;
        let length = if meta.nlink() == 0 {
            // Deleted: writers ring a new file now.
            let bell = self.store.open_revocation_bell()?;
            let length = bell.metadata().map_err(failed)?.len();
            *self.bell.write() = bell;
            self.heard.store(u64::MAX, Ordering::Release);
            length
        } else {
            meta.len()
        };
        if self.heard.load(Ordering::Acquire) == length {
            return Ok(());
        }
        // The length is taken before the table is read: a revocation committed after this read
        // rings again, and the next request reads again.
        let table: HashMap<String, Revoked> = self
            .store
            .revocations()?
            .into_iter()
            .map(|r| {
                let revoked = Revoked {
                    at_secs: u64::try_from(r.revoked_at_ms.max(0) / 1000).unwrap_or(0),
                    lifted: r.lifted_at_ms.is_some(),
                };
                (r.identity, revoked)
            })
            .collect();
        *self.revoked.write() = table;
        self.heard.store(length, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditRecord, AuthorizedUser};

    fn audit(at_ms: i64, identity: &str) -> AuditRecord {
        AuditRecord {
            at_ms,
            door: "cli".into(),
            identity: "cli:root".into(),
            action: "user.revoke".into(),
            target: identity.into(),
            outcome: "ok".into(),
            message: String::new(),
        }
    }

    /// The rule, and a second process's revocation (another `Store` handle on the same
    /// directory, as the CLI has) seen at the next look at the bell.
    #[test]
    fn jwts_issued_before_a_revocation_are_refused_and_a_login_lifts_the_iat_less_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Store::open(dir.path()).expect("store");
        let revocations = Revocations::looking_every(server.clone(), Duration::ZERO).expect("open");
        let cli = Store::open(dir.path()).expect("second handle");
        let bob = "itsyouonline:bob";
        assert!(!revocations.refuses(bob, Some(1_000)));
        assert!(!revocations.refuses(bob, None));

        let revoked = cli
            .revoke_user(bob, &audit(2_000_500, bob))
            .expect("revoke");
        assert!(revoked.jwts && revoked.any());
        // Issued before, in the same second, without iat: refused. After: accepted.
        assert!(revocations.refuses(bob, Some(1_000)));
        assert!(revocations.refuses(bob, Some(2_000)));
        assert!(revocations.refuses(bob, None));
        assert!(!revocations.refuses(bob, Some(2_001)));
        assert!(!revocations.refuses("itsyouonline:ada", None));

        // bob logs in through the bot: tokens without iat are accepted again, older ones are
        // not.
        let user = AuthorizedUser {
            user_id: 7,
            chat_id: 7,
            username: "bob".into(),
            ..AuthorizedUser::default()
        };
        cli.upsert_user(&user, 3_000_000).expect("login");
        assert!(!revocations.refuses(bob, None));
        assert!(revocations.refuses(bob, Some(1_000)));

        // Revoked again: the lift ends.
        cli.revoke_user(bob, &audit(4_000_000, bob))
            .expect("revoke");
        assert!(revocations.refuses(bob, None));
        assert!(revocations.refuses(bob, Some(3_999)));

        // The bell deleted (an operator cleaning up): the next ring is still heard.
        std::fs::remove_file(server.revocation_bell_path()).expect("rm");
        assert!(revocations.refuses(bob, None));
        cli.upsert_user(&user, 5_000_000).expect("login");
        assert!(!revocations.refuses(bob, None));
    }

    /// Between two looks at the bell file, this process's own revocations are heard at once;
    /// another process's wait for the next look.
    #[test]
    fn this_process_s_revocations_are_heard_at_once_and_the_file_is_looked_at_when_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Store::open(dir.path()).expect("store");
        let revocations =
            Revocations::looking_every(server.clone(), Duration::from_secs(3600)).expect("open");
        let cli = Store::open(dir.path()).expect("second handle");
        let (ann, bob) = ("itsyouonline:ann", "itsyouonline:bob");
        cli.revoke_user(ann, &audit(2_000_000, ann))
            .expect("revoke");
        assert!(
            !revocations.refuses(ann, Some(1_000)),
            "another process's ring waits for the next look"
        );
        server
            .revoke_user(bob, &audit(2_000_000, bob))
            .expect("revoke");
        assert!(revocations.refuses(bob, Some(1_000)), "heard at once");
        assert!(
            revocations.refuses(ann, Some(1_000)),
            "and the table read then has every revocation"
        );
        let (cid, dan) = ("itsyouonline:cid", "itsyouonline:dan");
        cli.revoke_user(cid, &audit(2_000_000, cid))
            .expect("revoke");
        assert!(!revocations.refuses(cid, Some(1_000)));
        // The look is due: the file says it rang.
        revocations.looked.store(0, Ordering::Relaxed);
        let due = Revocations {
            look_every: Duration::ZERO,
            ..revocations
        };
        assert!(due.refuses(cid, Some(1_000)));
        assert!(!due.refuses(dan, Some(1_000)));
    }

    /// Links of provider logins are found by their identity; revoking an ItsYou.online name
    /// does not log out a GitHub user of the same name.
    #[test]
    fn revoking_an_identity_removes_its_own_telegram_links_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let github = AuthorizedUser {
            user_id: 1,
            chat_id: 1,
            username: "alice".into(),
            identity: "github:alice".into(),
            provider: "gh".into(),
            ..AuthorizedUser::default()
        };
        let legacy = AuthorizedUser {
            user_id: 2,
            chat_id: 2,
            username: "alice".into(),
            ..AuthorizedUser::default()
        };
        store.upsert_user(&github, 1).expect("github");
        store.upsert_user(&legacy, 1).expect("legacy");
        assert_eq!(
            store.list_users().expect("list"),
            vec![
                ("github:alice".to_string(), 1, 0),
                ("itsyouonline:alice".to_string(), 1, 0)
            ]
        );
        let revoked = store
            .revoke_user("itsyouonline:alice", &audit(5, "itsyouonline:alice"))
            .expect("revoke");
        assert_eq!((revoked.links, revoked.tokens), (1, 0));
        assert!(store.user(1).expect("user").is_some(), "github:alice stays");
        let revoked = store
            .revoke_user("github:alice", &audit(6, "github:alice"))
            .expect("revoke");
        assert_eq!((revoked.links, revoked.jwts), (1, false));
        assert!(store.user(1).expect("user").is_none());
        let nobody = store
            .revoke_user("github:nobody", &audit(7, "github:nobody"))
            .expect("revoke");
        assert!(!nobody.any());
    }
}
