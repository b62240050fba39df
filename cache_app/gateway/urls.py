from django.urls import path

from cache_app.gateway import views

app_name = "gateway"

# Mounted at /v1/, so the SDKs' own paths apply: base_url ".../v1" (openai) or "..." (anthropic).
urlpatterns = [
    path("chat/completions", views.ChatCompletionsView.as_view(), name="chat-completions"),
    path("messages", views.MessagesView.as_view(), name="messages"),
]
