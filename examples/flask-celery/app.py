"""Flask + Celery + PostgreSQL + Redis, as ProspectLab runs them (Gunicorn, eventlet worker).

Its dependencies come from PyPI (requirements.txt, locked with hashes): psycopg 3 with its
binary wheel (psycopg_binary, compiled code), requests and BeautifulSoup for scraping.
"""
import os

import bs4
import psycopg
import psycopg_binary
import redis
import requests
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
    # The compiled dependency is the one in use: psycopg's "binary" implementation.
    with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5) as conn:
        user = conn.execute("select current_user").fetchone()[0]
    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"], socket_timeout=5).ping()
    return jsonify(
        database_user=user,
        broker="ok",
        psycopg=psycopg.__version__,
        psycopg_impl=psycopg.pq.__impl__,
        psycopg_binary=psycopg_binary.__version__,
        requests=requests.__version__,
        bs4=bs4.__version__,
    )


@app.route("/tasks/add")
def run_add():
    a, b = int(request.args.get("a", 1)), int(request.args.get("b", 2))
    return jsonify(result=add.delay(a, b).get(timeout=60))
