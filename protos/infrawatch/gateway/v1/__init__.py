"""Generated InfraWatch protobuf code; see the .proto files."""
