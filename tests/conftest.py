"""Settings every test process needs before any scrm or boto3 module is imported."""
import os

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_REGION", os.environ["AWS_DEFAULT_REGION"])
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("TABLE_NAME", "scrm-test")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "scrm-tests")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Scrm")
os.environ.pop("AWS_ENDPOINT_URL", None)
