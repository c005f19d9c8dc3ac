//! [`AccessStore`] on Postgres: tokens, the audit trail and sealed secrets, shared by every
//! node of the cluster.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PgStores, small};
use crate::access::{AUDIT_COLUMNS, SECRET_COLUMNS, Scopes, TOKEN_COLUMNS, TokenRow};
use crate::contract::AccessStore;
use crate::{AuditRecord, NewAuditEntry, Result, SealedSecret, StoreError, TokenRecord};

fn token_row(row: &Row) -> Result<TokenRecord> {
    TokenRow {
        record: TokenRecord {
            name: row.try_get(0)?,
            hash: row.try_get(1)?,
            role: row.try_get(2)?,
            functions: Vec::new(),
            queues: Vec::new(),
            secrets: Vec::new(),
            created_at_ms: row.try_get(4)?,
            expires_at_ms: row.try_get(5)?,
            last_used_at_ms: row.try_get(6)?,
        },
        scopes: row.try_get(3)?,
    }
    .decode()
}

fn audit_row(row: &Row) -> Result<AuditRecord> {
    let status: i32 = row.try_get(6)?;
    Ok(AuditRecord {
        id: row.try_get(0)?,
        entry: NewAuditEntry {
            at_ms: row.try_get(1)?,
            token: row.try_get(2)?,
            source: row.try_get(3)?,
            request: row.try_get(4)?,
            action: row.try_get(5)?,
            status: u16::try_from(status)
                .map_err(|_| StoreError::Corrupt(format!("an audit status of {status}")))?,
            outcome: row.try_get(7)?,
        },
    })
}

fn secret_row(row: &Row) -> Result<SealedSecret> {
    Ok(SealedSecret {
        name: row.try_get(0)?,
        version: small(i64::from(row.try_get::<_, i32>(1)?), "a secret's version")?,
        key_id: row.try_get(2)?,
        nonce: row.try_get(3)?,
        ciphertext: row.try_get(4)?,
        created_at_ms: row.try_get(5)?,
    })
}

#[async_trait]
impl AccessStore for PgStores {
    async fn create_token(&self, token: TokenRecord) -> Result<()> {
        let stored = self
            .client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT DO NOTHING"
                ),
                &[
                    &token.name,
                    &token.hash,
                    &token.role,
                    &Scopes::of(&token),
                    &token.created_at_ms,
                    &token.expires_at_ms,
                    &token.last_used_at_ms,
                ],
            )
            .await?;
        if stored == 0 {
            return Err(StoreError::AlreadyExists {
                what: format!("token `{}`", token.name),
            });
        }
        Ok(())
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name"),
                &[],
            )
            .await?;
        rows.iter().map(token_row).collect()
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"),
                &[&hash],
            )
            .await?;
        row.as_ref().map(token_row).transpose()
    }

    async fn remove_token(&self, name: &str) -> Result<bool> {
        let removed = self
            .client()
            .await?
            .execute("DELETE FROM tokens WHERE name = $1", &[&name])
            .await?;
        Ok(removed > 0)
    }

    async fn touch_token(&self, name: &str, at_ms: i64) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE tokens SET last_used_at_ms = $2
                 WHERE name = $1 AND (last_used_at_ms IS NULL OR last_used_at_ms < $2)",
                &[&name, &at_ms],
            )
            .await?;
        Ok(())
    }

    async fn append_audit(&self, entry: NewAuditEntry, keep_after_ms: i64) -> Result<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_one(
                "INSERT INTO audit (at_ms, token, source, request, action, status, outcome)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &entry.at_ms,
                    &entry.token,
                    &entry.source,
                    &entry.request,
                    &entry.action,
                    &i32::from(entry.status),
                    &entry.outcome,
                ],
            )
            .await?;
        tx.execute("DELETE FROM audit WHERE at_ms < $1", &[&keep_after_ms])
            .await?;
        tx.commit().await?;
        Ok(row.try_get(0)?)
    }

    async fn audit(&self, since_ms: i64, after_id: i64, limit: usize) -> Result<Vec<AuditRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit WHERE at_ms >= $1 AND id > $2
                     ORDER BY id LIMIT $3"
                ),
                &[&since_ms, &after_id, &limit],
            )
            .await?;
        rows.iter().map(audit_row).collect()
    }

    async fn put_secret(
        &self,
        name: &str,
        key_id: &str,
        nonce: Vec<u8>,
        ciphertext: Vec<u8>,
        at_ms: i64,
    ) -> Result<u32> {
        let client = self.client().await?;
        // Two nodes setting the same secret at once take the same next number; the one
        // whose insert lost takes the number after.
        loop {
            let row = client
                .query_opt(
                    &format!(
                        "INSERT INTO secrets ({SECRET_COLUMNS})
                         SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5
                         FROM secrets WHERE name = $1
                         ON CONFLICT DO NOTHING RETURNING version"
                    ),
                    &[&name, &key_id, &nonce, &ciphertext, &at_ms],
                )
                .await?;
            if let Some(row) = row {
                return small(i64::from(row.try_get::<_, i32>(0)?), "a secret's version");
            }
        }
    }

    async fn secrets(&self) -> Result<Vec<SealedSecret>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {SECRET_COLUMNS} FROM secrets ORDER BY name, version"),
                &[],
            )
            .await?;
        rows.iter().map(secret_row).collect()
    }

    async fn secret(&self, name: &str, version: Option<u32>) -> Result<Option<SealedSecret>> {
        let client = self.client().await?;
        let row = match version {
            Some(version) => {
                let version = i32::try_from(version).unwrap_or(i32::MAX);
                client
                    .query_opt(
                        &format!(
                            "SELECT {SECRET_COLUMNS} FROM secrets WHERE name = $1 AND version = $2"
                        ),
                        &[&name, &version],
                    )
                    .await?
            }
            None => {
                client
                    .query_opt(
                        &format!(
                            "SELECT {SECRET_COLUMNS} FROM secrets WHERE name = $1
                             ORDER BY version DESC LIMIT 1"
                        ),
                        &[&name],
                    )
                    .await?
            }
        };
        row.as_ref().map(secret_row).transpose()
    }

    async fn remove_secret(&self, name: &str) -> Result<bool> {
        let removed = self
            .client()
            .await?
            .execute("DELETE FROM secrets WHERE name = $1", &[&name])
            .await?;
        Ok(removed > 0)
    }

    async fn reseal_secret(
        &self,
        name: &str,
        version: u32,
        old_key_id: &str,
        key_id: &str,
        nonce: Vec<u8>,
        ciphertext: Vec<u8>,
    ) -> Result<bool> {
        let version = i32::try_from(version).unwrap_or(i32::MAX);
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE secrets SET key_id = $4, nonce = $5, ciphertext = $6
                 WHERE name = $1 AND version = $2 AND key_id = $3",
                &[&name, &version, &old_key_id, &key_id, &nonce, &ciphertext],
            )
            .await?;
        Ok(changed > 0)
    }
}
