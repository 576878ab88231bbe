//! An outbound delivery as the outbox keeps it (a Standard Webhooks message
//! or a Temasys notification POST: what to send where), the same for the
//! single node's SQLite rows and a cluster's Redis rows.

/// What an outbox row is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeliveryKind {
    /// A Standard Webhooks message to a `[[webhooks.endpoints]]` URL.
    #[default]
    Webhook,
    /// A Temasys-style recording notification: the metadata POSTed to an owner's `url`.
    Notification,
}

impl DeliveryKind {
    /// The stored name (`webhook`, `notification`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Notification => "notification",
        }
    }

    /// The kind a stored name stands for (a webhook unless `notification`).
    pub fn parse(text: &str) -> Self {
        match text {
            "notification" => Self::Notification,
            _ => Self::Webhook,
        }
    }
}

/// An outbox row to write with its cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Which kind of POST it is.
    pub kind: DeliveryKind,
    /// Written `held` (not sent until released), e.g. a
    /// notification waiting for the S3 upload that names its `retrievalUrl`.
    pub held: bool,
    /// The Standard Webhooks message id, the same for every endpoint and retry.
    pub message_id: String,
    /// The endpoint URL.
    pub endpoint: String,
    /// The event type, e.g. `recording.started`.
    pub event_type: String,
    /// The JSON body.
    pub payload: String,
}

/// A delivery that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Row id.
    pub seq: i64,
    /// Which kind of POST it is.
    pub kind: DeliveryKind,
    /// The Standard Webhooks message id.
    pub message_id: String,
    /// The endpoint URL.
    pub endpoint: String,
    /// The event type.
    pub event_type: String,
    /// The JSON body.
    pub payload: String,
    /// Attempts made so far.
    pub attempts: u32,
}
