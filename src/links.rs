//! Signed, expiring links to recordings' files.

/// The links to recordings' files that onair hands out (`recording_available`,
/// the `recording.available` webhook, Temasys `retrievalUrl`s and e-mails,
/// `GET /v1/recordings/{id}/url`): `[server] public_url` followed by the media
/// path, signed and expiring after `[storage] url_ttl_s`, so that they open
/// without a token or the admin key. Without `public_url` they are the signed
/// path alone, to be put after the address clients reach onair at.
#[derive(Debug, Clone)]
pub struct Links {
    /// `[server] public_url` without a trailing `/`, or empty.
    base: String,
    /// Signs the links (derived from the token secret or the admin key, so
    /// links made by one node or before a restart still open).
    key: [u8; 32],
    /// `[storage] url_ttl_s`.
    ttl_s: u64,
}

/// A signed link and when it expires (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The URL.
    pub url: String,
    /// When it stops opening.
    pub expires_at: u64,
}

impl Links {
    /// The links of `config`: under `[server] public_url` (or the older
    /// `[notifications] public_url`), valid `[storage] url_ttl_s`.
    pub fn from_config(config: &crate::Config, key: [u8; 32]) -> Self {
        let base = config
            .server
            .public_url
            .as_deref()
            .or(config.notifications.public_url.as_deref());
        Self::new(base, key, config.storage.url_ttl_s)
    }

    /// Links under `base` (an absolute URL, or none), signed with `key`, valid `ttl_s` seconds.
    pub fn new(base: Option<&str>, key: [u8; 32], ttl_s: u64) -> Self {
        Self {
            base: base.unwrap_or_default().trim_end_matches('/').to_owned(),
            key,
            ttl_s,
        }
    }

    /// A link to recording `id`'s file, valid from now.
    pub fn media(&self, id: &str) -> Link {
        let expires_at = unix_now().saturating_add(self.ttl_s);
        let signature = self.signature(id, expires_at);
        Link {
            url: format!(
                "{}/v1/recordings/{id}/media?expires={expires_at}&signature={signature}",
                self.base
            ),
            expires_at,
        }
    }

    /// Whether a presented link's `expires` and `signature` are ours, for
    /// recording `id`, and not expired (compared in constant time).
    pub fn valid(&self, id: &str, expires: u64, signature: &str) -> bool {
        use hmac::Mac;
        let Ok(presented) = hex::decode(signature) else {
            return false;
        };
        self.mac(id, expires).verify_slice(&presented).is_ok() && expires >= unix_now()
    }

    fn signature(&self, id: &str, expires: u64) -> String {
        use hmac::Mac;
        hex::encode(self.mac(id, expires).finalize().into_bytes())
    }

    fn mac(&self, id: &str, expires: u64) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .expect("HMAC takes any key length");
        mac.update(format!("{id}.{expires}").as_bytes());
        mac
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(url: &str) -> (u64, String) {
        let (_, query) = url.split_once('?').unwrap();
        let mut expires = 0;
        let mut signature = String::new();
        for pair in query.split('&') {
            match pair.split_once('=').unwrap() {
                ("expires", v) => expires = v.parse().unwrap(),
                ("signature", v) => signature = v.to_owned(),
                _ => {}
            }
        }
        (expires, signature)
    }

    #[test]
    fn links_are_absolute_signed_and_expire() {
        let links = Links::new(Some("https://onair.example.com/"), [7; 32], 60);
        let link = links.media("r1");
        assert!(
            link.url
                .starts_with("https://onair.example.com/v1/recordings/r1/media?expires="),
            "{}",
            link.url
        );
        let (expires, signature) = query(&link.url);
        assert_eq!(expires, link.expires_at);
        assert!(links.valid("r1", expires, &signature));
        // Another recording, another key, a changed expiry, a tampered or
        // malformed signature: refused.
        assert!(!links.valid("r2", expires, &signature));
        assert!(!Links::new(None, [8; 32], 60).valid("r1", expires, &signature));
        assert!(!links.valid("r1", expires + 1, &signature));
        let mut tampered = signature.clone();
        tampered.replace_range(0..1, if signature.starts_with('0') { "1" } else { "0" });
        assert!(!links.valid("r1", expires, &tampered));
        assert!(!links.valid("r1", expires, "not-hex"));
        // An expired link, even correctly signed, is refused.
        let past = unix_now() - 1;
        assert!(!links.valid("r1", past, &links.signature("r1", past)));
        // Without a public URL the link is the signed path.
        let path = Links::new(None, [7; 32], 60).media("r1");
        assert!(path.url.starts_with("/v1/recordings/r1/media?expires="));
    }
}
