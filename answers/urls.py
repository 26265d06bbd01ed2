from django.urls import path

from answers import views

app_name = "answers"

urlpatterns = [
    path("budget/", views.budget, name="budget"),
]
