//! Control API wire types (docs/api.md), as the CLI sends and reads them: the wire crate's
//! (`eddy_parse::api` for requests, `eddy_parse::responses` for answers), the very types the
//! node reads and writes. `--json` output does not go through these types: it prints the
//! node's JSON as received.

pub use eddy_parse::api::{
    ConsumerRequest, CreateQueue, CreateToken, DeployRequest, RollbackRequest,
};
pub use eddy_parse::responses::{
    AuditEntry, AuditPage, Rekeyed, SecretInfo, SecretList, SecretSet, TokenCreated, TokenInfo,
    TokenList,
};
pub use eddy_parse::responses::{
    Broadcast, Consumer, Deployed, ErrorBody, Function, FunctionList, FunctionStats, LogEntry,
    LogPage, Member, Message, MessageList, NodeList, Purged, Queue, QueueList, Redriven, Removed,
    RolledBack, Sent, StatsList, Version, VersionList, WebSocketList,
};
pub use eddy_parse::schedule::{Missed, Overlap, ScheduleSettings};
