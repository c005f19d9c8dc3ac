//! Tokens, the audit trail and sealed secrets on SQLite.

use rusqlite::{OptionalExtension, Row, params};

use crate::{AuditRecord, NewAuditEntry, Result, SealedSecret, Store, StoreError, TokenRecord};

pub(crate) const TOKEN_COLUMNS: &str =
    "name, hash, role, scopes, created_at_ms, expires_at_ms, last_used_at_ms";
pub(crate) const AUDIT_COLUMNS: &str = "id, at_ms, token, source, request, action, status, outcome";
pub(crate) const SECRET_COLUMNS: &str = "name, version, key_id, nonce, ciphertext, created_at_ms";

/// A token's scopes as one stored JSON value.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub(crate) struct Scopes {
    #[serde(default)]
    pub functions: Vec<String>,
    #[serde(default)]
    pub queues: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
}

impl Scopes {
    pub(crate) fn of(token: &TokenRecord) -> String {
        serde_json::to_string(&Scopes {
            functions: token.functions.clone(),
            queues: token.queues.clone(),
            secrets: token.secrets.clone(),
        })
        .expect("scopes serialize")
    }

    pub(crate) fn parse(text: &str) -> Result<Scopes> {
        serde_json::from_str(text)
            .map_err(|e| StoreError::Corrupt(format!("a token's scopes do not decode: {e}")))
    }
}

/// A token from its columns, with its scopes still as stored.
pub(crate) struct TokenRow {
    pub record: TokenRecord,
    pub scopes: String,
}

impl TokenRow {
    pub(crate) fn decode(self) -> Result<TokenRecord> {
        let scopes = Scopes::parse(&self.scopes)?;
        Ok(TokenRecord {
            functions: scopes.functions,
            queues: scopes.queues,
            secrets: scopes.secrets,
            ..self.record
        })
    }
}

fn token_row(row: &Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        record: TokenRecord {
            name: row.get(0)?,
            hash: row.get(1)?,
            role: row.get(2)?,
            functions: Vec::new(),
            queues: Vec::new(),
            secrets: Vec::new(),
            created_at_ms: row.get(4)?,
            expires_at_ms: row.get(5)?,
            last_used_at_ms: row.get(6)?,
        },
        scopes: row.get(3)?,
    })
}

fn audit_row(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.get(0)?,
        entry: NewAuditEntry {
            at_ms: row.get(1)?,
            token: row.get(2)?,
            source: row.get(3)?,
            request: row.get(4)?,
            action: row.get(5)?,
            status: row.get(6)?,
            outcome: row.get(7)?,
        },
    })
}

fn secret_row(row: &Row<'_>) -> rusqlite::Result<SealedSecret> {
    Ok(SealedSecret {
        name: row.get(0)?,
        version: row.get(1)?,
        key_id: row.get(2)?,
        nonce: row.get(3)?,
        ciphertext: row.get(4)?,
        created_at_ms: row.get(5)?,
    })
}

impl Store {
    /// See [`crate::AccessStore::create_token`].
    pub fn create_token(&self, token: &TokenRecord) -> Result<()> {
        let stored = self.conn().execute(
            &format!(
                "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT DO NOTHING"
            ),
            params![
                token.name,
                token.hash,
                token.role,
                Scopes::of(token),
                token.created_at_ms,
                token.expires_at_ms,
                token.last_used_at_ms
            ],
        )?;
        if stored == 0 {
            return Err(StoreError::AlreadyExists {
                what: format!("token `{}`", token.name),
            });
        }
        Ok(())
    }

    /// See [`crate::AccessStore::tokens`].
    pub fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name"))?;
        let rows = stmt.query_map([], token_row)?;
        rows.map(|row| row?.decode()).collect()
    }

    /// See [`crate::AccessStore::token_by_hash`].
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"),
                [hash],
                token_row,
            )
            .optional()?;
        row.map(TokenRow::decode).transpose()
    }

    /// See [`crate::AccessStore::remove_token`].
    pub fn remove_token(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM tokens WHERE name = ?1", [name])?
            > 0)
    }

    /// See [`crate::AccessStore::touch_token`].
    pub fn touch_token(&self, name: &str, at_ms: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE tokens SET last_used_at_ms = ?2
             WHERE name = ?1 AND (last_used_at_ms IS NULL OR last_used_at_ms < ?2)",
            params![name, at_ms],
        )?;
        Ok(())
    }

    /// See [`crate::AccessStore::append_audit`].
    pub fn append_audit(&self, entry: &NewAuditEntry, keep_after_ms: i64) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO audit (at_ms, token, source, request, action, status, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                entry.at_ms,
                entry.token,
                entry.source,
                entry.request,
                entry.action,
                entry.status,
                entry.outcome
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute("DELETE FROM audit WHERE at_ms < ?1", [keep_after_ms])?;
        tx.commit()?;
        Ok(id)
    }

    /// See [`crate::AccessStore::audit`].
    pub fn audit(&self, since_ms: i64, after_id: i64, limit: usize) -> Result<Vec<AuditRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE at_ms >= ?1 AND id > ?2
             ORDER BY id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![since_ms, after_id, i64::try_from(limit).unwrap_or(i64::MAX)],
            audit_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// See [`crate::AccessStore::put_secret`].
    pub fn put_secret(
        &self,
        name: &str,
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
        at_ms: i64,
    ) -> Result<u32> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let latest: Option<u32> = tx.query_row(
            "SELECT max(version) FROM secrets WHERE name = ?1",
            [name],
            |row| row.get(0),
        )?;
        let version = latest.unwrap_or(0) + 1;
        tx.execute(
            &format!("INSERT INTO secrets ({SECRET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![name, version, key_id, nonce, ciphertext, at_ms],
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// See [`crate::AccessStore::secrets`].
    pub fn secrets(&self) -> Result<Vec<SealedSecret>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets ORDER BY name, version"
        ))?;
        let rows = stmt.query_map([], secret_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// See [`crate::AccessStore::secret`].
    pub fn secret(&self, name: &str, version: Option<u32>) -> Result<Option<SealedSecret>> {
        let conn = self.conn();
        let row = match version {
            Some(version) => conn
                .query_row(
                    &format!(
                        "SELECT {SECRET_COLUMNS} FROM secrets WHERE name = ?1 AND version = ?2"
                    ),
                    params![name, version],
                    secret_row,
                )
                .optional()?,
            None => conn
                .query_row(
                    &format!(
                        "SELECT {SECRET_COLUMNS} FROM secrets WHERE name = ?1
                         ORDER BY version DESC LIMIT 1"
                    ),
                    [name],
                    secret_row,
                )
                .optional()?,
        };
        Ok(row)
    }

    /// See [`crate::AccessStore::remove_secret`].
    pub fn remove_secret(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM secrets WHERE name = ?1", [name])?
            > 0)
    }

    /// See [`crate::AccessStore::reseal_secret`].
    pub fn reseal_secret(
        &self,
        name: &str,
        version: u32,
        old_key_id: &str,
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE secrets SET key_id = ?4, nonce = ?5, ciphertext = ?6
             WHERE name = ?1 AND version = ?2 AND key_id = ?3",
            params![name, version, old_key_id, key_id, nonce, ciphertext],
        )? > 0)
    }
}
