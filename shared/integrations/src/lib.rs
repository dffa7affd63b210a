//! The outside services mend notifies and listens to: Slack (approval
//! messages, signed interactions) and GitHub (signed webhooks). The pull
//! requests themselves are the proposer's.

pub mod github;
pub mod slack;
