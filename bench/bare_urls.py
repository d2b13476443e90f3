"""bench/intake.py's reference endpoint: POST /bare/ validates a little JSON and inserts one row."""

from django.urls import path
from rest_framework import generics, serializers

from approvals.models import RateWindow


class RowSerializer(serializers.ModelSerializer):
    class Meta:
        model = RateWindow  # any small table: one INSERT per request is the point
        fields = ["id", "key", "window_start", "count"]


class Create(generics.CreateAPIView):
    serializer_class = RowSerializer


urlpatterns = [path("bare/", Create.as_view())]
