"""Cross-language check: a Python client generated from proto/ with grpcio-tools produces and
fetches against a running Sluice broker.

Usage: python3 cross_language.py HOST:PORT PROTO_DIR [CA_FILE TOKEN]
With CA_FILE and TOKEN it connects over TLS (verifying the broker against CA_FILE, as
"localhost") with the bearer token, and first checks that a call without it is refused.
Exits non-zero (with a message) on any mismatch.
"""

import sys
import tempfile

from grpc_tools import protoc


def generate(proto_dir: str, out_dir: str) -> None:
    files = [f"sluice/v1/{name}.proto" for name in ("records", "admin", "producer", "consumer")]
    args = ["protoc", f"-I{proto_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *files]
    if protoc.main(args) != 0:
        sys.exit("protoc failed to compile the Sluice protos")


def main() -> None:
    address, proto_dir = sys.argv[1], sys.argv[2]
    out_dir = tempfile.mkdtemp(prefix="sluice-py-")
    generate(proto_dir, out_dir)
    sys.path.insert(0, out_dir)

    import grpc
    from sluice.v1 import admin_pb2, admin_pb2_grpc, consumer_pb2, consumer_pb2_grpc
    from sluice.v1 import producer_pb2, producer_pb2_grpc, records_pb2

    if len(sys.argv) > 4:
        with open(sys.argv[3], "rb") as ca_file:
            tls = grpc.ssl_channel_credentials(root_certificates=ca_file.read())
        options = [("grpc.ssl_target_name_override", "localhost")]
        anonymous = admin_pb2_grpc.AdminStub(grpc.secure_channel(address, tls, options=options))
        try:
            anonymous.ListTopics(admin_pb2.ListTopicsRequest())
            sys.exit("a call without a token was not refused")
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                sys.exit(f"a call without a token gave {error.code()}, expected UNAUTHENTICATED")
        token = grpc.access_token_call_credentials(sys.argv[4])
        channel = grpc.secure_channel(address, grpc.composite_channel_credentials(tls, token), options=options)
    else:
        channel = grpc.insecure_channel(address)
    admin = admin_pb2_grpc.AdminStub(channel)
    producer = producer_pb2_grpc.ProducerStub(channel)
    consumer = consumer_pb2_grpc.ConsumerStub(channel)

    admin.CreateTopic(admin_pb2.CreateTopicRequest(name="py-orders", partitions=3))
    records = [
        records_pb2.Record(
            key=f"customer-{i % 4}".encode(),
            value=f"order {i}".encode(),
            headers=[records_pb2.Header(name="event-type", value=b"order.placed")],
            timestamp_ms=1_700_000_000_000 + i,
        )
        for i in range(20)
    ]
    response = producer.Produce(producer_pb2.ProduceRequest(topic="py-orders", records=records))
    written = sum(a.record_count for a in response.appends)
    if written != 20:
        sys.exit(f"expected 20 records written, got {written}")

    seen = {}
    for partition in range(3):
        fetched = consumer.Fetch(consumer_pb2.FetchRequest(topic="py-orders", partition=partition, offset=0))
        for offset, record in enumerate(fetched.records):
            seen[record.value] = record
            if record.partition != partition or record.offset != offset:
                sys.exit(f"record at {partition}/{offset} says {record.partition}/{record.offset}")
            if record.headers[0].name != "event-type" or record.headers[0].value != b"order.placed":
                sys.exit(f"header lost: {record}")
    for original in records:
        got = seen.get(original.value)
        if got is None:
            sys.exit(f"record {original.value!r} not fetched back")
        if got.key != original.key or got.timestamp_ms != original.timestamp_ms:
            sys.exit(f"record {original.value!r} changed: {got}")

    # A batch large enough that Subscribe sends its records as stored bytes, after a small one.
    small = [records_pb2.Record(value=b"small")]
    producer.Produce(producer_pb2.ProduceRequest(topic="py-orders", partition=2, records=small))
    large = [records_pb2.Record(key=b"k", value=bytes([i % 251]) * 1000) for i in range(200)]
    appended = producer.Produce(producer_pb2.ProduceRequest(topic="py-orders", partition=2, records=large))
    first = appended.appends[0].base_offset
    end = first + len(large)
    for start in (first, first + 57):
        position = consumer_pb2.StartPosition(offset=start)
        request = consumer_pb2.SubscribeRequest(topic="py-orders", partition=2, start=position)
        subscription = consumer.Subscribe(request)
        got = []
        for message in subscription:
            got.extend(message.records)
            if got and got[-1].offset >= end - 1:
                break
        subscription.cancel()
        expected = large[start - first:]
        if [r.offset for r in got] != list(range(start, end)):
            sys.exit(f"Subscribe from {start} gave offsets {[r.offset for r in got][:5]}...")
        for record, original in zip(got, expected):
            if record.value != original.value or record.key != b"k" or record.partition != 2:
                sys.exit(f"Subscribe changed record {record.offset}")

    try:
        consumer.Fetch(consumer_pb2.FetchRequest(topic="no-such-topic", partition=0, offset=0))
        sys.exit("fetching an unknown topic did not fail")
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            sys.exit(f"unknown topic gave {error.code()}, expected NOT_FOUND")
    try:
        request = consumer_pb2.SubscribeRequest(topic="no-such-topic", partition=0)
        next(iter(consumer.Subscribe(request)))
        sys.exit("subscribing to an unknown topic did not fail")
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            sys.exit(f"subscribing to an unknown topic gave {error.code()}, expected NOT_FOUND")
    print("python cross-language check: ok")


if __name__ == "__main__":
    main()
