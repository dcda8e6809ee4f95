"""Settings from the environment the role gives (/etc/imgforge/env/portal.env)."""
import os

SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",")
ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
INSTALLED_APPS = ["django.contrib.contenttypes"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(os.environ.get("DATA_DIR", "/tmp"), "portal.sqlite3"),
    }
}
# Behind the gateway: trust its X-Forwarded-Proto and -Host.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = True
USE_TZ = True
