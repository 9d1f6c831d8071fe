//! Generates the etcd v3 wire types and the peer protocol from cairn's own .proto files.
//! protox parses them in pure Rust, so building cairn needs no system `protoc`.
//! pbjson-build adds serde impls following the proto3 JSON mapping for etcd's packages (the
//! JSON gateway, `server/gateway`); the peer protocol has no JSON form.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/etcd/kv.proto",
        "proto/etcd/auth.proto",
        "proto/etcd/rpc.proto",
        "proto/etcd/v3lock.proto",
        "proto/etcd/v3election.proto",
        "proto/cairn/peer.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"])?;
    let descriptors = fds.encode_to_vec();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        // etcd's gateway (grpc-gateway with OrigName) writes the .proto field names.
        .preserve_proto_field_names()
        // ... and ignores fields it does not know, as Go's jsonpb with AllowUnknownFields.
        .ignore_unknown_fields()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    Ok(())
}
