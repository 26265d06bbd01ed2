from django.urls import path

from conversations import data_views, list_views, views

app_name = "conversations"

urlpatterns = [
    path("", views.home, name="home"),
    path("c/<int:conversation_id>/", views.conversation_detail, name="detail"),
    path("c/<int:conversation_id>/instructions/", views.update_instructions, name="instructions"),
    path("conversations/", list_views.conversation_list, name="list"),
    path("search/", list_views.search, name="search"),
    path("c/<int:conversation_id>/rename/", list_views.rename, name="rename"),
    path("c/<int:conversation_id>/pin/", list_views.pin, name="pin"),
    path("c/<int:conversation_id>/archive/", list_views.archive, name="archive"),
    path("c/<int:conversation_id>/delete/", list_views.delete, name="delete"),
    path("c/<int:conversation_id>/export.md", data_views.conversation_export, {"fmt": "md"},
         name="export_md"),
    path("c/<int:conversation_id>/export.json", data_views.conversation_export, {"fmt": "json"},
         name="export_json"),
    path("account/", data_views.account, name="account"),
    path("account/export/", data_views.export_my_data, name="export_my_data"),
    path("account/export.zip", data_views.latest_export, name="latest_export"),
    path("account/exports/<int:job_id>.zip", data_views.download_export, name="download_export"),
    path("account/jobs.json", data_views.data_jobs, name="data_jobs"),
    path("account/import/", data_views.import_conversations, name="import"),
]
