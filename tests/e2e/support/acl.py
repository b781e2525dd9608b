"""Refusing writes to one topic for a while, as a broker with ACLs refuses them
(deploy/local/kafka/server.properties.in runs the StandardAuthorizer with
allow.everyone.if.no.acl.found=true, so a topic without ACLs is open to everyone).

    deny_writes(topic)   # producers get TOPIC_AUTHORIZATION_FAILED for this topic
    ...
    allow_writes(topic)  # back to no ACLs: writes accepted again

What a client sees while denied (librdkafka, measured on the local broker): every
delivery report for the topic has code 29 TOPIC_AUTHORIZATION_FAILED, not retriable, not
fatal, the same for an idempotent producer (no error_cb, no fatal error, no
CLUSTER_AUTHORIZATION_FAILED); after a refusal a long-lived producer also raises
KafkaException(TOPIC_AUTHORIZATION_FAILED) from produce() itself until its next metadata
refresh. After allow_writes a fresh producer is accepted at once, a long-lived one
within about 1 s (its metadata refresh), with no restart.

The ACLs live in the broker's metadata log: they survive a broker restart, so a test
calls allow_writes in a `finally` (deploy/local/reset.sh wipes them with the data).
"""
import time

from .stack import KAFKA

PRINCIPAL = "User:ANONYMOUS"  # every PLAINTEXT client, the service under test included


def _admin():
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": KAFKA})


def _bindings(topic, principal):
    """The DENY WRITE, and an ALLOW ALL to everyone beside it: once a topic has any ACL,
    allow.everyone.if.no.acl.found no longer applies to it, and a DENY WRITE alone would
    also refuse DESCRIBE and READ (metadata and consumers get TOPIC_AUTHORIZATION_FAILED).
    DENY wins over ALLOW, so only writes are refused, and only to `principal`."""
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, ResourcePatternType,
                                       ResourceType)
    return [AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:*", "*",
                       AclOperation.ALL, AclPermissionType.ALLOW),
            AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*",
                       AclOperation.WRITE, AclPermissionType.DENY)]


def _topic_acls(admin, topic):
    from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType,
                                       ResourceType)
    flt = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, None, None,
                           AclOperation.ANY, AclPermissionType.ANY)
    return set(admin.describe_acls(flt).result(timeout=10))


def _wait_acls(admin, topic, done, what, timeout):
    # DescribeAcls is answered from the broker's own authorizer, the one that checks
    # Produce (CreateAcls/DeleteAcls go to the controller and reach the broker through
    # the metadata log), so "listed" / "gone" here means in effect for producers.
    # Measured: listed/gone at the first describe after the call returned, and a
    # produce right then was refused/accepted in 30 of 30 cycles; no extra delay needed.
    deadline = time.monotonic() + timeout
    while True:
        acls = _topic_acls(admin, topic)
        if done(acls):
            return
        assert time.monotonic() < deadline, f"ACLs of topic {topic!r} not {what} after {timeout}s: {acls}"
        time.sleep(0.05)


def deny_writes(topic, principal=PRINCIPAL, timeout=30):
    """Refuses writes to `topic` by `principal`; returns once a fresh producer is refused."""
    admin = _admin()
    bindings = _bindings(topic, principal)
    for future in admin.create_acls(bindings).values():
        future.result(timeout=timeout)
    _wait_acls(admin, topic, lambda acls: set(bindings) <= acls, "listed", timeout)
    _check_refused(topic)


def _check_refused(topic):
    """A probe record with a fresh producer, which the broker must refuse. A refused
    record is not written; should the broker take it anyway, the test fails here, naming
    the offset of the record it now holds (a probe is the only proof of a refusal)."""
    from confluent_kafka import Producer
    from confluent_kafka import KafkaError
    reports = []
    producer = Producer({"bootstrap.servers": KAFKA, "linger.ms": 0, "message.timeout.ms": 10000,
                         "enable.idempotence": False, "retries": 0})
    producer.produce(topic, key=b"acl-probe", value=b"deny_writes probe (must be refused)",
                     on_delivery=lambda err, msg: reports.append((err, msg)))
    assert producer.flush(15) == 0, f"deny_writes({topic!r}): probe not answered in 15 s"
    err, msg = reports[0]
    assert err is not None, (f"deny_writes({topic!r}): the broker accepted the probe record "
                             f"(partition {msg.partition()} offset {msg.offset()}): ACLs not in effect")
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, \
        f"deny_writes({topic!r}): probe refused with {err.name()}, not TOPIC_AUTHORIZATION_FAILED"


def allow_writes(topic, principal=PRINCIPAL, timeout=30):
    """Removes what deny_writes(topic, principal) added; returns once the broker lists
    none of it. No probe: an accepted probe would be a record in the test's topic."""
    from confluent_kafka.admin import AclBindingFilter
    admin = _admin()
    bindings = _bindings(topic, principal)
    filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                                b.operation, b.permission_type) for b in bindings]
    for future in admin.delete_acls(filters).values():
        future.result(timeout=timeout)
    _wait_acls(admin, topic, lambda acls: not (set(bindings) & acls), "gone", timeout)
