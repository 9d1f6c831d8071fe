//! etcd's gRPC errors: the exact codes and messages clients match on
//! (etcd's `api/v3rpc/rpctypes/error.go`).

use tonic::{Code, Status};

use crate::mvcc::MvccError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: request timed out, possibly due to connection lost")]
    TimeoutDueToConnectionLost,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    TimeoutLeaderTransfer,
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> Code {
        use ApiError::*;
        match self {
            EmptyKey | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | RequestTooLarge | KeyNotFound => Code::InvalidArgument,
            Compacted | FutureRevision => Code::OutOfRange,
            LeaseNotFound => Code::NotFound,
            LeaseExists => Code::FailedPrecondition,
            LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace => Code::ResourceExhausted,
            Corrupt => Code::DataLoss,
            NoLeader | LeaderChanged | Timeout | TimeoutDueToConnectionLost | Stopped => {
                Code::Unavailable
            }
            MemberNotFound => Code::NotFound,
            PeerUrlExists
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners
            | NotEnoughStartedMembers => Code::FailedPrecondition,
            MemberBadUrls => Code::InvalidArgument,
            NotSupportedForLearner | TimeoutLeaderTransfer => Code::Unavailable,
            NotLeader | BadLeaderTransferee => Code::FailedPrecondition,
            Internal(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<crate::cluster::MembershipError> for ApiError {
    fn from(e: crate::cluster::MembershipError) -> Self {
        use crate::cluster::MembershipError as M;
        match e {
            M::MemberNotFound => ApiError::MemberNotFound,
            M::PeerUrlExists => ApiError::PeerUrlExists,
            M::BadUrls => ApiError::MemberBadUrls,
            M::NotLearner => ApiError::MemberNotLearner,
            M::LearnerNotReady => ApiError::LearnerNotReady,
            M::TooManyLearners => ApiError::TooManyLearners,
            M::NotEnoughStarted => ApiError::NotEnoughStartedMembers,
            M::NotLeader => ApiError::LeaderChanged,
            M::Raft(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<MvccError> for ApiError {
    fn from(e: MvccError) -> Self {
        match e {
            MvccError::Compacted => ApiError::Compacted,
            MvccError::FutureRevision => ApiError::FutureRevision,
            MvccError::KeyNotFound => ApiError::KeyNotFound,
            MvccError::LeaseNotFound => ApiError::LeaseNotFound,
            MvccError::LeaseExists => ApiError::LeaseExists,
            MvccError::NoSpace => ApiError::NoSpace,
            MvccError::Corrupt => ApiError::Corrupt,
            MvccError::Storage(detail) => ApiError::Internal(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_match_etcd() {
        let s: Status = ApiError::Compacted.into();
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s: Status = ApiError::DuplicateKey.into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "etcdserver: duplicate key given in txn request"
        );
        let s: Status = ApiError::from(MvccError::LeaseNotFound).into();
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "etcdserver: requested lease not found");
    }
}
