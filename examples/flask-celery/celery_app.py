"""The Celery application: broker and results in Redis (CELERY_BROKER_URL)."""
import os

from celery import Celery

celery = Celery(
    "prospectlab",
    broker=os.environ["CELERY_BROKER_URL"],
    backend=os.environ.get("CELERY_RESULT_BACKEND", os.environ["CELERY_BROKER_URL"]),
)
celery.conf.beat_schedule = {
    "heartbeat": {"task": "celery_app.heartbeat", "schedule": 300.0},
}


@celery.task
def add(a, b):
    return a + b


@celery.task
def heartbeat():
    return "ok"
