//! Telegram chat sessions (what a chat is in the middle of) and small settings.

use super::db::{OptionalExtension, params};

use super::{Store, StoreError};

impl Store {
    /// What chat `chat_id` is in the middle of (a prompt waiting for an answer), if anything.
    pub fn chat_pending(&self, chat_id: i64) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<String> = self
            .lock()
            .query_row(
                "SELECT pending FROM chat_sessions WHERE chat_id = ?1",
                params![chat_id],
                |row| row.get(0),
            )
            .optional()?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Decode(e.to_string())))
            .transpose()
    }

    /// Records (or clears, with `None`) what chat `chat_id` is in the middle of.
    pub fn set_chat_pending(
        &self,
        chat_id: i64,
        pending: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        match pending {
            Some(value) => conn.execute(
                "INSERT INTO chat_sessions (chat_id, pending) VALUES (?1, ?2)
                 ON CONFLICT (chat_id) DO UPDATE SET pending = excluded.pending",
                params![chat_id, value.to_string()],
            )?,
            None => conn.execute(
                "DELETE FROM chat_sessions WHERE chat_id = ?1",
                params![chat_id],
            )?,
        };
        Ok(())
    }

    /// A setting.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT value FROM settings WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// A secret setting (256 random bits, hex), made on first use: the same value for every
    /// server on this store from then on.
    pub fn secret_setting(&self, key: &str) -> Result<String, StoreError> {
        let fresh = hex::encode(rand::random::<[u8; 32]>());
        let conn = self.lock();
        conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            params![key, fresh],
        )?;
        Ok(conn.query_row(
            "SELECT value FROM settings WHERE key = ?1",
            params![key],
            |row| row.get(0),
        )?)
    }

    /// Writes a setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pending_prompts_and_settings_persist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(store.chat_pending(1).expect("get"), None);
        let prompt = json!({"blueprint": "web.yaml", "repo": "demo"});
        store.set_chat_pending(1, Some(&prompt)).expect("set");
        store.set_setting("telegram_offset", "42").expect("setting");
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.chat_pending(1).expect("get"), Some(prompt));
        assert_eq!(
            store.setting("telegram_offset").expect("get").as_deref(),
            Some("42")
        );
        store.set_chat_pending(1, None).expect("clear");
        assert_eq!(store.chat_pending(1).expect("get"), None);
    }

    #[test]
    fn a_secret_setting_is_made_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let first = store.secret_setting("k").expect("secret");
        assert_eq!(first.len(), 64);
        assert_ne!(first, store.secret_setting("j").expect("other"));
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.secret_setting("k").expect("again"), first);
    }
}
