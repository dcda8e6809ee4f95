from django.http import HttpResponse, JsonResponse
from django.urls import path


def index(request):
    return JsonResponse({"app": "portal", "host": request.get_host(), "secure": request.is_secure()})


def health(request):
    return HttpResponse("ok\n", content_type="text/plain")


urlpatterns = [path("", index), path("health/", health)]
