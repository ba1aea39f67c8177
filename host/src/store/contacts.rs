//! Contacts — e-mail address, phone number, birth date — are personal data: kept apart from the
//! pseudonymous profile, encrypted at rest with AES-256-GCM (a fresh nonce per value, the row's identity
//! as associated data so a ciphertext cannot be moved to another player), never logged.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sqlx::Row;

use super::now_ms;

/// The key that encrypts contacts at rest.
#[derive(Clone)]
pub struct ContactsKey {
    cipher: Aes256Gcm,
    /// Set once a contact did not decrypt: said once in the log, not at every read.
    told: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for ContactsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContactsKey(…)")
    }
}

impl ContactsKey {
    /// From 64 hex characters (32 bytes).
    pub fn from_hex(hex_key: &str) -> anyhow::Result<Self> {
        let bytes = hex::decode(hex_key.trim())
            .map_err(|_| anyhow::anyhow!("the contacts key must be 64 hex characters"))?;
        anyhow::ensure!(bytes.len() == 32, "the contacts key must be 32 bytes (64 hex characters)");
        let key =
            Key::<Aes256Gcm>::try_from(bytes.as_slice()).map_err(|_| anyhow::anyhow!("bad key length"))?;
        Ok(ContactsKey { cipher: Aes256Gcm::new(&key), told: Default::default() })
    }

    /// The development key kept in `path`: read if it is there, else made and written (readable by
    /// its owner only), so that `serve --dev` reads its contacts again after a restart.
    pub fn dev(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if path.exists() {
            let hex_key =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            return Self::from_hex(&hex_key).with_context(|| format!("the key in {}", path.display()));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let (key, hex_key) = Self::generate();
        let mut file = std::fs::OpenOptions::new();
        file.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        std::io::Write::write_all(
            &mut file.open(path).with_context(|| format!("writing {}", path.display()))?,
            hex_key.as_bytes(),
        )?;
        Ok(key)
    }

    /// A random key, printed by `serve --dev` and forgotten at exit.
    pub fn generate() -> (Self, String) {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("randomness");
        let hex_key = hex::encode(bytes);
        (Self::from_hex(&hex_key).expect("32 bytes"), hex_key)
    }

    fn seal(&self, aad: &str, plaintext: &str) -> (Vec<u8>, Vec<u8>) {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("randomness");
        let ct = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext.as_bytes(), aad: aad.as_bytes() })
            .expect("AES-GCM encryption of a small value");
        (nonce.to_vec(), ct)
    }

    fn open(&self, aad: &str, nonce: &[u8], ciphertext: &[u8]) -> anyhow::Result<String> {
        let nonce = Nonce::try_from(nonce).map_err(|_| anyhow::anyhow!("bad nonce"))?;
        let pt = self
            .cipher
            .decrypt(&nonce, Payload { msg: ciphertext, aad: aad.as_bytes() })
            .map_err(|_| anyhow::anyhow!("a contact does not decrypt (wrong key or tampered row)"))?;
        Ok(String::from_utf8(pt)?)
    }
}

fn aad(brand: &str, player: &str, kind: &str) -> String {
    format!("{brand}\u{0}{player}\u{0}{kind}")
}

/// Stores (or replaces) one contact value inside the caller's transaction. A new value is valid again
/// even if the old one bounced; the same value again changes nothing.
pub async fn upsert(
    conn: &mut sqlx::AnyConnection,
    key: &ContactsKey,
    brand: &str,
    player: &str,
    kind: &str,
    value: &str,
) -> anyhow::Result<()> {
    // The same value sent again (a profile update repeating the address) keeps a hard bounce's mark:
    // only a different address is worth trying.
    let old = sqlx::query(
        "SELECT nonce, ciphertext FROM contacts WHERE brand_id = $1 AND player_id = $2 AND kind = $3",
    )
    .bind(brand)
    .bind(player)
    .bind(kind)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(r) = old {
        let (nonce, ct): (Vec<u8>, Vec<u8>) = (r.try_get("nonce")?, r.try_get("ciphertext")?);
        if key.open(&aad(brand, player, kind), &nonce, &ct).is_ok_and(|v| v == value) {
            return Ok(());
        }
    }
    let (nonce, ct) = key.seal(&aad(brand, player, kind), value);
    sqlx::query(
        "INSERT INTO contacts (brand_id, player_id, kind, nonce, ciphertext, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (brand_id, player_id, kind) DO UPDATE SET nonce = excluded.nonce,
             ciphertext = excluded.ciphertext, updated_at = excluded.updated_at, invalid_since = NULL",
    )
    .bind(brand)
    .bind(player)
    .bind(kind)
    .bind(nonce)
    .bind(ct)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A contact as delivery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    Missing,
    /// It bounced hard; nothing goes to it until it changes.
    Invalid,
    /// In clear: for delivery, never for plugins or logs.
    Valid(String),
    /// Stored, but it does not decrypt with this host's key (another key, or a tampered row): treated
    /// as no contact, never as an error of the request.
    Unreadable,
}

pub async fn for_delivery(
    conn: &mut sqlx::AnyConnection,
    key: &ContactsKey,
    brand: &str,
    player: &str,
    kind: &str,
) -> anyhow::Result<Contact> {
    let row = sqlx::query(
        "SELECT nonce, ciphertext, invalid_since FROM contacts
         WHERE brand_id = $1 AND player_id = $2 AND kind = $3",
    )
    .bind(brand)
    .bind(player)
    .bind(kind)
    .fetch_optional(conn)
    .await?;
    let Some(r) = row else { return Ok(Contact::Missing) };
    if r.try_get::<Option<i64>, _>("invalid_since")?.is_some() {
        return Ok(Contact::Invalid);
    }
    let nonce: Vec<u8> = r.try_get("nonce")?;
    let ct: Vec<u8> = r.try_get("ciphertext")?;
    match key.open(&aad(brand, player, kind), &nonce, &ct) {
        Ok(value) => Ok(Contact::Valid(value)),
        Err(e) => {
            if !key.told.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::error!(brand, kind, error = %e,
                    "contacts do not decrypt with this host's key: they are treated as unreadable (is PITBOSS_CONTACTS_KEY the key they were written with?)");
            }
            Ok(Contact::Unreadable)
        }
    }
}

/// The valid contacts of one kind of a brand's players in `(after, last]`, in clear, by player (those
/// that do not decrypt are left out, as `for_delivery` treats them).
pub async fn of_players(
    conn: &mut sqlx::AnyConnection,
    key: &ContactsKey,
    brand: &str,
    which: super::Players<'_>,
    kind: &str,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let sql = format!(
        "SELECT player_id, nonce, ciphertext FROM contacts
         WHERE brand_id = $1 AND kind = $2 AND invalid_since IS NULL AND {}",
        which.condition(super::Backend::of(conn), 3)
    );
    let rows =
        which.bind(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand).bind(kind)).fetch_all(conn).await?;
    let mut out = std::collections::HashMap::with_capacity(rows.len());
    for r in rows {
        let player: String = r.try_get("player_id")?;
        let (nonce, ct): (Vec<u8>, Vec<u8>) = (r.try_get("nonce")?, r.try_get("ciphertext")?);
        if let Ok(value) = key.open(&aad(brand, &player, kind), &nonce, &ct) {
            out.insert(player, value);
        }
    }
    Ok(out)
}

/// A contact's value in clear, if there is a valid one.
pub async fn get(
    conn: &mut sqlx::AnyConnection,
    key: &ContactsKey,
    brand: &str,
    player: &str,
    kind: &str,
) -> anyhow::Result<Option<String>> {
    Ok(match for_delivery(conn, key, brand, player, kind).await? {
        Contact::Valid(v) => Some(v),
        Contact::Missing | Contact::Invalid | Contact::Unreadable => None,
    })
}

/// Marks a contact invalid (a hard bounce), inside the caller's transaction.
pub async fn mark_invalid(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    player: &str,
    kind: &str,
    at: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE contacts SET invalid_since = $4 WHERE brand_id = $1 AND player_id = $2 AND kind = $3
         AND invalid_since IS NULL",
    )
    .bind(brand)
    .bind(player)
    .bind(kind)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Erasure: every contact of the player is deleted (all their personal data).
pub fn erasure_step<'a>(
    tx: &'a mut super::Tx,
    e: &'a super::erasure::Erased<'a>,
) -> super::erasure::StepFuture<'a> {
    Box::pin(async move {
        sqlx::query("DELETE FROM contacts WHERE brand_id = $1 AND player_id = $2")
            .bind(e.brand)
            .bind(e.player)
            .execute(&mut **tx)
            .await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_row() {
        let (key, _) = ContactsKey::generate();
        let (nonce, ct) = key.seal(&aad("A", "p1", "email"), "alex@example.com");
        assert!(!String::from_utf8_lossy(&ct).contains("alex"));
        assert_eq!(key.open(&aad("A", "p1", "email"), &nonce, &ct).unwrap(), "alex@example.com");
        assert!(key.open(&aad("A", "p2", "email"), &nonce, &ct).is_err(), "moved to another player");
        let (other, _) = ContactsKey::generate();
        assert!(other.open(&aad("A", "p1", "email"), &nonce, &ct).is_err(), "another key");
    }
}
