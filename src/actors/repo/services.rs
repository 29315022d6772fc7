//! A repository's services: executing a blueprint into them, scheduling and deleting them, and
//! writing every change to the store before it counts.

use super::RepoState;
use super::files::problems;
use crate::actors::error::AysError;
use crate::engine::{self, Service};
use crate::store::AuditRecord;
use tracing::info;

impl RepoState {
    /// What executing blueprint `name` with text `content` would make of the services, or
    /// every problem (of the templates, of the blueprint against them, a consumer loop).
    /// Changes nothing.
    pub(super) fn apply_blueprint(
        &self,
        name: &str,
        content: &str,
    ) -> Result<engine::Outcome, AysError> {
        let (templates, mut found) = self.files.templates()?;
        let outcome = match engine::execute_blueprint(name, content, &templates, &self.services) {
            Ok(outcome) if found.is_empty() => outcome,
            Ok(_) => return Err(AysError::Invalid(problems(found))),
            Err(list) => {
                found.extend(list);
                return Err(AysError::Invalid(problems(found)));
            }
        };
        if let Some(cycle) = engine::consumer_cycle(&outcome.services) {
            return Err(AysError::Invalid(vec![format!(
                "{name}: services consume each other in a loop, which can never run: {}",
                cycle.join(" -> ")
            )]));
        }
        Ok(outcome)
    }

    /// Validates a blueprint as a whole against the templates and applies it, or changes
    /// nothing; returns the keys of created or changed services.
    /// `audit`: the command's row, written with the services.
    pub(super) fn execute_blueprint(
        &mut self,
        name: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<Vec<String>, AysError> {
        let blueprint = self.files.blueprint(name)?;
        if blueprint.archived {
            return Err(AysError::Conflict(format!(
                "blueprint {name:?} is archived; restore it first"
            )));
        }
        self.keep_templates()?;
        let outcome = self.apply_blueprint(name, &blueprint.content)?;
        let changed: Vec<String> = outcome.changed.clone();
        let previous = std::mem::replace(&mut self.services, outcome.services);
        if let Err(err) = self.save_audited(changed.iter(), &[], audit) {
            self.services = previous;
            return Err(err);
        }
        info!(repo = %self.name, blueprint = %name, changed = changed.len(), "blueprint executed");
        Ok(changed)
    }

    /// Writes these services (and deletes those keys) durably.
    pub(super) fn save<'a>(
        &self,
        keys: impl Iterator<Item = &'a String>,
        deleted: &[String],
    ) -> Result<(), AysError> {
        self.save_audited(keys, deleted, None)
    }

    /// [`Self::save`] with the audit row of the command that made the change, in the same
    /// transaction.
    pub(super) fn save_audited<'a>(
        &self,
        keys: impl Iterator<Item = &'a String>,
        deleted: &[String],
        audit: Option<&AuditRecord>,
    ) -> Result<(), AysError> {
        let docs = self.documents(keys)?;
        self.shared
            .store
            .save_services(&self.name, &docs, deleted, audit)
            .map_err(Into::into)
    }

    /// The stored form of services: `(key, JSON)`.
    pub(super) fn documents<'a>(
        &self,
        keys: impl Iterator<Item = &'a String>,
    ) -> Result<Vec<(String, String)>, AysError> {
        let mut docs = Vec::new();
        for key in keys {
            if let Some(service) = self.services.get(key) {
                let doc = serde_json::to_string(service)
                    .map_err(|err| AysError::Internal(format!("cannot encode {key}: {err}")))?;
                docs.push((key.clone(), doc));
            }
        }
        Ok(docs)
    }

    /// One service.
    pub(super) fn service(&self, role: &str, name: &str) -> Result<&Service, AysError> {
        self.services
            .get(&format!("{role}!{name}"))
            .ok_or_else(|| AysError::NotFound(format!("service {role}!{name} not found")))
    }

    /// Deletes a service and its children (and their working directories); returns the
    /// removed keys.
    pub(super) fn delete_service(
        &mut self,
        role: &str,
        name: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<Vec<String>, AysError> {
        let key = self.service(role, name)?.key.clone();
        let before = self.services.clone();
        let removed = engine::remove_service(&mut self.services, &key);
        let touched: Vec<String> = self
            .services
            .iter()
            .filter(|(k, s)| before.get(*k) != Some(*s))
            .map(|(k, _)| k.clone())
            .collect();
        if let Err(err) = self.save_audited(touched.iter(), &removed, audit) {
            self.services = before;
            return Err(err);
        }
        for key in &removed {
            if let Some(service) = before.get(key) {
                let dir = self
                    .files
                    .dir()
                    .join("services")
                    .join(&service.role)
                    .join(&service.name);
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        Ok(removed)
    }

    /// Schedules one action of a service.
    pub(super) fn schedule(
        &mut self,
        role: &str,
        name: &str,
        action: &str,
        args: Option<serde_json::Value>,
        audit: Option<&AuditRecord>,
    ) -> Result<Service, AysError> {
        let key = self.service(role, name)?.key.clone();
        engine::schedule_action(&mut self.services, &key, action)
            .map_err(|err| AysError::NotFound(err.to_string()))?;
        if let Some(service) = self.services.get_mut(&key) {
            match args {
                Some(args) => service.args.insert(action.to_string(), args),
                None => service.args.remove(action),
            };
        }
        // A person asks for it: its retries start afresh.
        self.forget_retries(&[(key.clone(), action.to_string())])?;
        self.save_audited(std::iter::once(&key), &[], audit)?;
        self.service(role, name).cloned()
    }
}
