"""The Powertools Tracer, kept apart from scrm.platform.observability on purpose.

Importing it loads the X-Ray SDK (about as long as boto3 itself), so the callback, whose
cold start sits inside WeCom's 5-second window, does not import it; Lambda's own active
tracing still records the callback's invocations. The workers, which have time, do.
"""
from aws_lambda_powertools import Tracer

tracer = Tracer()
