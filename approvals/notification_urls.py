from django.urls import path

from approvals import decision_links, slack_actions

urlpatterns = [
    path("decide/<str:token>/", decision_links.decide, name="notification-decide"),
    path("slack/actions/", slack_actions.actions, name="slack-actions"),
]
