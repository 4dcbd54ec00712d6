//! The dashboard's four requests and their replies, and what each service answers.

use lepus::rpc::Request;
use lepus::Message;
use serde::{Deserialize, Serialize};

/// Asks the ads service for a user's active ads.
#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(routing_key = "ads.active.get", reply = ActiveAds)]
#[serde(rename_all = "camelCase")]
pub struct GetActiveAds {
    /// Whose ads.
    pub user_id: u64,
}

/// The ads a user has online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveAds {
    /// Ad ids.
    pub ids: Vec<u64>,
}

/// Asks the ads service for the ads a user watches.
#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(routing_key = "ads.observed.get", reply = ObservedAds)]
#[serde(rename_all = "camelCase")]
pub struct GetObservedAds {
    /// Whose watch list.
    pub user_id: u64,
}

/// The ads a user watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedAds {
    /// Ad ids.
    pub ids: Vec<u64>,
}

/// Asks the recommendation engine what to show a user.
#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(routing_key = "recommendations.get", reply = Recommendations)]
#[serde(rename_all = "camelCase")]
pub struct GetRecommendations {
    /// For whom.
    pub user_id: u64,
}

/// Ads recommended to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendations {
    /// Ad titles, best first.
    pub titles: Vec<String>,
}

/// Asks the messaging service for a user's inbox.
#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(routing_key = "messages.get", reply = Inbox)]
#[serde(rename_all = "camelCase")]
pub struct GetMessages {
    /// Whose inbox.
    pub user_id: u64,
}

/// A user's inbox summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbox {
    /// Unread messages.
    pub unread: u32,
    /// Subjects of the latest messages.
    pub latest: Vec<String>,
}

/// What the ads service answers (ids derived from the user's).
pub fn active_ads(user_id: u64) -> ActiveAds {
    let base = user_id.saturating_mul(100);
    ActiveAds {
        ids: vec![
            base.saturating_add(1),
            base.saturating_add(2),
            base.saturating_add(3),
        ],
    }
}

/// What the ads service answers for the watch list.
pub fn observed_ads(user_id: u64) -> ObservedAds {
    let base = user_id.saturating_mul(100);
    ObservedAds {
        ids: vec![base.saturating_add(51), base.saturating_add(52)],
    }
}

/// What the recommendation engine answers.
pub fn recommendations(_user_id: u64) -> Recommendations {
    Recommendations {
        titles: [
            "City bike, 2 years old",
            "Winter tyres 205/55 R16",
            "Desk lamp",
        ]
        .map(String::from)
        .to_vec(),
    }
}

/// What the messaging service answers.
pub fn inbox(_user_id: u64) -> Inbox {
    Inbox {
        unread: 2,
        latest: ["Is the bike still available?", "Can you ship it to Gdansk?"]
            .map(String::from)
            .to_vec(),
    }
}
