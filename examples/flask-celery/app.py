"""Flask + Celery + PostgreSQL + Redis, as ProspectLab runs them (Gunicorn, eventlet worker)."""
import os

import psycopg2
import redis
from flask import Flask, jsonify, request
from werkzeug.middleware.proxy_fix import ProxyFix

from celery_app import add

app = Flask(__name__)
app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1)


@app.route("/")
def index():
    return jsonify(app="prospectlab", base=request.host_url)


@app.route("/health")
def health():
    # The database with the password from the secret slot, and the broker.
    with psycopg2.connect(os.environ["DATABASE_URL"], connect_timeout=5) as conn:
        with conn.cursor() as cur:
            cur.execute("select current_user")
            user = cur.fetchone()[0]
    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"], socket_timeout=5).ping()
    return jsonify(database_user=user, broker="ok")


@app.route("/tasks/add")
def run_add():
    a, b = int(request.args.get("a", 1)), int(request.args.get("b", 2))
    return jsonify(result=add.delay(a, b).get(timeout=60))
