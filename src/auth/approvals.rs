//! Two-person approvals: an action listed in `[access].two_person` is held (a row in the store)
//! until a *second* admin approves it; whoever asked cannot approve their own request. The door
//! that approves then carries the action out (`client::carry_out`). A held action not approved
//! within [`EXPIRES_AFTER_MS`] expires: it can no longer be approved, and whoever wants it asks
//! again.

use rand::RngCore as _;

use super::access::Action;
use super::audit::{self, Door, Outcome};
use crate::store::{ApprovalRecord, Store, StoreError};

/// How long a held action waits for its second admin: 24 hours.
pub const EXPIRES_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

/// Why an approval was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No held action of that id.
    #[error("no approval {0}")]
    NotFound(String),
    /// Already approved by someone.
    #[error("approval {0} was already approved")]
    Done(String),
    /// Held longer than [`EXPIRES_AFTER_MS`].
    #[error("approval {0} expired: it waited more than 24 hours; ask again")]
    Expired(String),
    /// The requester tried to approve their own request.
    #[error("the same admin cannot approve their own request; another admin must")]
    OwnRequest,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Holds `action` on `target` for `who`; the request is audited (`denied`: held, with the
/// approval's id). Returns the id.
pub fn request(
    store: &Store,
    door: Door,
    who: &str,
    action: Action,
    target: &str,
) -> Result<String, StoreError> {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    let id = format!("apr_{}", hex::encode(bytes));
    let held = ApprovalRecord {
        id: id.clone(),
        action: action.as_str().to_string(),
        target: target.to_string(),
        requested_by: who.to_string(),
        door: door.as_str().to_string(),
        created_ms: crate::clock::now_ms(),
        approved_by: None,
    };
    let why = format!("held until a second admin approves {id}");
    let row = audit::record(door, who, action, target, &Outcome::Denied(why));
    store.insert_approval(&held, &row)?;
    Ok(id)
}

/// `approver` approves the held action `id`: refused (and audited as denied) for its own
/// requester. Returns the action and target to carry out.
pub fn approve(
    store: &Store,
    door: Door,
    approver: &str,
    id: &str,
) -> Result<(Action, String, String), ApprovalError> {
    let held = store
        .approval(id)?
        .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
    if held.approved_by.is_some() {
        return Err(ApprovalError::Done(id.to_string()));
    }
    let refused = if held.requested_by == approver {
        Some(ApprovalError::OwnRequest)
    } else if crate::clock::now_ms() - held.created_ms > EXPIRES_AFTER_MS {
        Some(ApprovalError::Expired(id.to_string()))
    } else {
        None
    };
    if let Some(refused) = refused {
        let why = refused.to_string();
        let row = audit::record(
            door,
            approver,
            Action::ApprovalApprove,
            id,
            &Outcome::Denied(why),
        );
        audit::write(store, &row);
        return Err(refused);
    }
    let action = Action::parse(&held.action).ok_or_else(|| {
        ApprovalError::Store(StoreError::Decode(format!(
            "unknown action {}",
            held.action
        )))
    })?;
    let row = audit::record(door, approver, Action::ApprovalApprove, id, &Outcome::Ok);
    if !store.approve(id, approver, &row)? {
        return Err(ApprovalError::Done(id.to_string()));
    }
    Ok((action, held.target, held.requested_by))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Time is tokio's (paused): a day passes in no time.
    #[tokio::test(start_paused = true)]
    async fn a_held_action_expires_and_can_then_no_longer_be_approved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let held = |target: &str| {
            request(
                &store,
                Door::Rest,
                "github:alice",
                Action::RepoDelete,
                target,
            )
            .expect("held")
        };
        let (late, in_time) = (held("old"), held("new"));
        tokio::time::advance(std::time::Duration::from_millis(
            EXPIRES_AFTER_MS as u64 - 1000,
        ))
        .await;
        let fresh = held("fresh");
        assert!(approve(&store, Door::Rest, "github:bob", &in_time).is_ok());
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        assert!(matches!(
            approve(&store, Door::Telegram, "github:bob", &late),
            Err(ApprovalError::Expired(_))
        ));
        assert!(
            matches!(
                approve(&store, Door::Telegram, "github:bob", &late),
                Err(ApprovalError::Expired(_))
            ),
            "still expired, never approved"
        );
        assert!(approve(&store, Door::Rest, "github:bob", &fresh).is_ok());
        let rows = store
            .list_audit(&crate::store::AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .expect("audit");
        let expired: Vec<_> = rows
            .iter()
            .filter(|r| r.record.target == late && r.record.action == "approval.approve")
            .map(|r| {
                (
                    r.record.outcome.as_str(),
                    r.record.message.contains("expired"),
                )
            })
            .collect();
        assert_eq!(expired, [("denied", true), ("denied", true)]);
    }

    #[test]
    fn a_second_admin_approves_once_and_never_the_requester() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let id = request(
            &store,
            Door::Rest,
            "github:alice",
            Action::RepoDelete,
            "demo",
        )
        .expect("held");
        assert!(matches!(
            approve(&store, Door::Rest, "github:alice", &id),
            Err(ApprovalError::OwnRequest)
        ));
        let (action, target, by) =
            approve(&store, Door::Telegram, "github:bob", &id).expect("approved");
        assert_eq!(
            (action, target.as_str(), by.as_str()),
            (Action::RepoDelete, "demo", "github:alice")
        );
        assert!(matches!(
            approve(&store, Door::Rest, "github:carol", &id),
            Err(ApprovalError::Done(_))
        ));
        assert!(matches!(
            approve(&store, Door::Rest, "github:carol", "apr_nope"),
            Err(ApprovalError::NotFound(_))
        ));
        let rows = store
            .list_audit(&crate::store::AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .expect("audit");
        let outcomes: Vec<_> = rows
            .iter()
            .rev()
            .map(|r| {
                (
                    r.record.identity.as_str(),
                    r.record.action.as_str(),
                    r.record.outcome.as_str(),
                )
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                ("github:alice", "repo.delete", "denied"),
                ("github:alice", "approval.approve", "denied"),
                ("github:bob", "approval.approve", "ok"),
            ]
        );
    }
}
