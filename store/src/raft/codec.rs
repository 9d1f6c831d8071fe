//! Encodings for what crosses the log and the peer network.
//!
//! Raft messages and commands are serde types encoded with bincode; etcd request and response
//! messages inside them stay in protobuf (their own, versioned wire format), embedded as bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct CodecError {
    what: &'static str,
    #[source]
    source: bincode::Error,
}

pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serialize(value).map_err(|source| CodecError { what, source })
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    bincode::deserialize(bytes).map_err(|source| CodecError { what, source })
}

/// serde adapter: a prost message as its protobuf bytes.
pub mod pb {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<M: prost::Message, S: Serializer>(m: &M, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&m.encode_to_vec())
    }

    pub fn deserialize<'de, M: prost::Message + Default, D: Deserializer<'de>>(
        d: D,
    ) -> Result<M, D::Error> {
        let bytes: Vec<u8> = Vec::deserialize(d)?;
        M::decode(bytes.as_slice()).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::PutRequest;
    use crate::raft::Command;

    #[test]
    fn commands_round_trip() {
        let cmd = Command::Put(PutRequest {
            key: b"k".to_vec(),
            value: vec![0, 1, 2],
            lease: 7,
            ..Default::default()
        });
        let bytes = encode("command", &cmd).unwrap();
        match decode::<Command>("command", &bytes).unwrap() {
            Command::Put(p) => {
                assert_eq!(p.key, b"k");
                assert_eq!(p.value, vec![0, 1, 2]);
                assert_eq!(p.lease, 7);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(decode::<Command>("command", &[0xff; 3]).is_err());
    }
}
