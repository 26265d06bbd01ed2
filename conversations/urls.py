from django.urls import path

from conversations import views

app_name = "conversations"

urlpatterns = [
    path("", views.home, name="home"),
    path("c/<int:conversation_id>/", views.conversation_detail, name="detail"),
    path("budget/", views.budget, name="budget"),
    path("c/<int:conversation_id>/instructions/", views.update_instructions, name="instructions"),
]
