//! Single-use tickets (OpenTalk's `ticket#…` subprotocol): `POST
//! /v1/rooms/{room}/start` trades a token for one, and the upgrade redeems it.
//!
//! A ticket expires at `[auth] ticket_ttl_s` or at its token's `exp`, whichever
//! comes first, so it never outlives the token it was traded for. One `sub`
//! may hold at most `[auth] max_tickets_per_sub` unredeemed, unexpired
//! tickets: what they cost is bounded by the number of valid tokens, not by
//! how fast one token asks. One node keeps them in memory; with `[cluster]`
//! they live in Redis, so a ticket issued by one node is redeemed by any, once,
//! and the cap counts every node's.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

use crate::auth::{Claims, random_string};
use crate::cluster::{Cluster, ClusterError};

/// Where a deployment's tickets are.
pub struct Tickets {
    memory: Memory,
    /// `[cluster]`: Redis instead of `memory`.
    cluster: Option<Arc<Cluster>>,
    ttl: Duration,
}

/// Why a ticket could not be issued or redeemed.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// Refused for the caller's reason.
    #[error(transparent)]
    Refused(#[from] TicketRefusal),
    /// `[cluster]`: Redis did not answer.
    #[error("tickets are kept in the cluster's Redis, which did not answer: {0}")]
    Unavailable(#[from] ClusterError),
}

impl Tickets {
    /// Tickets that live `ttl` at most; in Redis when `cluster` is given.
    pub fn new(ttl: Duration, cluster: Option<Arc<Cluster>>) -> Self {
        Self {
            memory: Memory::new(),
            cluster,
            ttl,
        }
    }

    /// Issues a ticket for verified claims, unless their `sub` already holds
    /// `max_per_sub` (0 = no limit) or the token has expired.
    pub async fn issue(&self, claims: Claims, max_per_sub: usize) -> Result<String, TicketError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let token_left = Duration::from_secs(claims.exp).saturating_sub(now);
        if token_left.is_zero() {
            return Err(TicketRefusal::TokenExpired.into());
        }
        let life = self.ttl.min(token_left);
        let Some(cluster) = &self.cluster else {
            return Ok(self.memory.issue(claims, life, max_per_sub)?);
        };
        let ticket = random_string(48);
        let json = serde_json::to_string(&claims).expect("claims serialize");
        if cluster
            .issue_ticket(&ticket, &claims.sub, json, life, max_per_sub)
            .await?
        {
            Ok(ticket)
        } else {
            Err(TicketRefusal::TooMany(max_per_sub).into())
        }
    }

    /// Redeems a ticket: it works once, on any node, and only before it expires.
    pub async fn redeem(&self, ticket: &str) -> Result<Option<Claims>, ClusterError> {
        let Some(cluster) = &self.cluster else {
            return Ok(self.memory.redeem(ticket));
        };
        let claims = cluster.redeem_ticket(ticket, sub_of).await?;
        Ok(claims.and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// Forgets expired tickets that were never redeemed (Redis expires its own).
    pub fn sweep(&self) {
        self.memory.sweep();
    }

    /// The ticket lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// The `sub` of stored claims.
fn sub_of(json: &str) -> Option<String> {
    serde_json::from_str::<Claims>(json).ok().map(|c| c.sub)
}

/// One node's tickets, in memory (they live seconds: nothing to save).
struct Memory {
    issued: DashMap<String, (Claims, Instant)>,
    /// Outstanding tickets per `sub` (entries at zero are removed).
    per_sub: DashMap<String, usize>,
}

/// Why no ticket was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketRefusal {
    /// The `sub` already holds the most outstanding tickets allowed.
    #[error(
        "this user already holds {0} unredeemed tickets ([auth] max_tickets_per_sub); redeem or let them expire"
    )]
    TooMany(usize),
    /// The token is already past its `exp` (accepted only within the leeway).
    #[error("token expired: a ticket cannot outlive its token")]
    TokenExpired,
}

impl Memory {
    fn new() -> Self {
        Self {
            issued: DashMap::new(),
            per_sub: DashMap::new(),
        }
    }

    /// Issues a ticket for `life`, unless the `sub` already holds
    /// `max_per_sub` (0 = no limit).
    fn issue(
        &self,
        claims: Claims,
        life: Duration,
        max_per_sub: usize,
    ) -> Result<String, TicketRefusal> {
        let expires = Instant::now() + life;
        {
            // The entry guard makes check-and-count one step for this sub.
            let mut count = self.per_sub.entry(claims.sub.clone()).or_insert(0);
            if max_per_sub > 0 && *count >= max_per_sub {
                return Err(TicketRefusal::TooMany(max_per_sub));
            }
            *count += 1;
        }
        let ticket = random_string(48);
        self.issued.insert(ticket.clone(), (claims, expires));
        Ok(ticket)
    }

    /// Redeems a ticket: it works once, and only before it expires.
    fn redeem(&self, ticket: &str) -> Option<Claims> {
        let (_, (claims, expires)) = self.issued.remove(ticket)?;
        self.release(&claims.sub);
        (Instant::now() < expires).then_some(claims)
    }

    /// Forgets expired tickets that were never redeemed.
    fn sweep(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        self.issued.retain(|_, (claims, expires)| {
            let keep = *expires > now;
            if !keep {
                expired.push(std::mem::take(&mut claims.sub));
            }
            keep
        });
        // After `retain`: no guard of `issued` is held while `per_sub` is touched.
        for sub in expired {
            self.release(&sub);
        }
    }

    /// One outstanding ticket of `sub` is gone.
    fn release(&self, sub: &str) {
        if let Some(mut count) = self.per_sub.get_mut(sub) {
            *count = count.saturating_sub(1);
        }
        self.per_sub.remove_if(sub, |_, count| *count == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims_for;
    use crate::protocol::Role;

    const LIFE: Duration = Duration::from_secs(30);

    #[test]
    fn tickets_are_single_use_and_expire() {
        let tickets = Memory::new();
        let claims = claims_for("r", "Ada", None, Role::User, Duration::from_secs(60));
        let t = tickets.issue(claims.clone(), LIFE, 10).unwrap();
        assert_eq!(tickets.redeem(&t), Some(claims.clone()));
        assert_eq!(tickets.redeem(&t), None);
        let short = Memory::new();
        let t = short.issue(claims, Duration::ZERO, 10).unwrap();
        assert_eq!(short.redeem(&t), None);
    }

    #[test]
    fn tickets_are_capped_per_sub_and_given_back() {
        let tickets = Memory::new();
        let ada = claims_for("r", "Ada", Some("ada"), Role::User, Duration::from_secs(60));
        let bob = claims_for("r", "Bob", Some("bob"), Role::User, Duration::from_secs(60));
        let issued: Vec<String> = (0..3)
            .map(|_| tickets.issue(ada.clone(), LIFE, 3).unwrap())
            .collect();
        assert_eq!(
            tickets.issue(ada.clone(), LIFE, 3),
            Err(TicketRefusal::TooMany(3))
        );
        assert!(tickets.issue(bob, LIFE, 3).is_ok());
        assert!(tickets.redeem(&issued[0]).is_some());
        assert!(tickets.issue(ada.clone(), LIFE, 3).is_ok());
        // Expired tickets give their place back when swept.
        let short = Memory::new();
        short.issue(ada.clone(), Duration::ZERO, 1).unwrap();
        short.sweep();
        assert!(short.issue(ada, Duration::ZERO, 1).is_ok());
        assert!(short.per_sub.len() == 1);
    }

    #[tokio::test]
    async fn a_ticket_never_outlives_its_token() {
        let tickets = Tickets::new(Duration::from_secs(30), None);
        let mut expired = claims_for("r", "Ada", None, Role::User, Duration::from_secs(60));
        expired.exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 1;
        assert!(matches!(
            tickets.issue(expired, 10).await,
            Err(TicketError::Refused(TicketRefusal::TokenExpired))
        ));
        let soon = claims_for("r", "Ada", None, Role::User, Duration::from_secs(2));
        let t = tickets.issue(soon, 10).await.unwrap();
        let (_, (_, expires)) = tickets.memory.issued.remove(&t).unwrap();
        assert!(expires <= Instant::now() + Duration::from_secs(2));
    }
}
