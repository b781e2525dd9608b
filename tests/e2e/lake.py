"""The stack's lake: SeaweedFS (`deploy/local/services/seaweedfs.sh`) serving S3 and an
Iceberg REST catalog, both real. What the service is given to use it, an independent
pyiceberg client to read it back, and the outage switch (down.sh/up.sh, as an operator
would stop the store).
"""
import os

from support.stack import stack_service

S3_URL = os.environ.get("SEAWEED_S3_URL", "http://127.0.0.1:8333")
CATALOG_URL = os.environ.get("SEAWEED_ICEBERG_URL", "http://127.0.0.1:8181")
TABLE_BUCKET = os.environ.get("SEAWEED_TABLE_BUCKET", "warehouse")
ACCESS_KEY = os.environ.get("SEAWEED_ACCESS_KEY", "ingest-stack")
SECRET_KEY = os.environ.get("SEAWEED_SECRET_KEY", "ingest-stack-secret")
TOKENS_URL = f"{CATALOG_URL}/v1/oauth/tokens"
REGION = "us-east-1"

# S3 settings for any client of the store (ours, pyiceberg, pyarrow).
S3_PROPERTIES = {"s3.endpoint": S3_URL, "s3.region": REGION, "s3.path-style-access": "true",
                 "s3.access-key-id": ACCESS_KEY, "s3.secret-access-key": SECRET_KEY}


def rest_catalog_config():
    """The service's `iceberg.catalog` for SeaweedFS's REST catalog: OAuth2 client
    credentials (the S3 key pair) for the catalog, the same keys for the data files."""
    return {"type": "rest", "uri": CATALOG_URL, "warehouse": f"s3://{TABLE_BUCKET}",
            "properties": {"credential": f"{ACCESS_KEY}:{SECRET_KEY}", "oauth2-server-uri": TOKENS_URL,
                           **S3_PROPERTIES}}


def rest_catalog():
    """An independent client of the same catalog: pyiceberg's RestCatalog."""
    from pyiceberg.catalog.rest import RestCatalog
    return RestCatalog("seaweedfs", uri=CATALOG_URL, warehouse=f"s3://{TABLE_BUCKET}",
                       credential=f"{ACCESS_KEY}:{SECRET_KEY}", **{"oauth2-server-uri": TOKENS_URL},
                       **S3_PROPERTIES)


def load_table(ident):
    """The table as the catalog serves it now, or None (missing, or the store is down)."""
    try:
        return rest_catalog().load_table(ident)
    except Exception:
        return None


def s3():
    import boto3
    return boto3.client("s3", endpoint_url=S3_URL, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name=REGION)


def create_bucket(name):
    s3().create_bucket(Bucket=name)
    return name


def keys(bucket, prefix=""):
    return [o["Key"] for page in s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]


def seaweedfs_service(action):
    """Stops or starts the whole store (S3 and catalog), data kept on disk."""
    return stack_service("seaweedfs", action)
