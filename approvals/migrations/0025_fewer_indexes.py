# Fewer indexes to write on every proposal and tier write (issue 14): see the comments in approvals.models.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('approvals', '0024_agent_recent_and_judged_indexes'),
        ('auth', '0012_alter_user_first_name_max_length'),
        ('connectors', '0003_execution_started_when_built'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name='historicalreviewtask',
            name='state',
            field=models.CharField(choices=[('waiting', 'Waiting'), ('active', 'Active'), ('satisfied', 'Satisfied'), ('rejected', 'Rejected'), ('closed', 'Closed')], default='waiting', max_length=10),
        ),
        migrations.AlterField(
            model_name='proposal',
            name='claimed_by',
            field=models.ForeignKey(blank=True, db_index=False, editable=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name='proposal',
            name='connector',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='proposals', to='connectors.connector'),
        ),
        migrations.AlterField(
            model_name='proposal',
            name='edited_by',
            field=models.ForeignKey(blank=True, db_index=False, editable=False, help_text='Who made the planned change what it is now: they may not approve it themselves', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name='proposal',
            name='expires_at',
            field=models.DateTimeField(blank=True, editable=False, help_text="Still waiting then, it expires and never executes (the matrix's max age; the agent's answer time)", null=True),
        ),
        migrations.AlterField(
            model_name='proposal',
            name='held_by',
            field=models.ForeignKey(blank=True, db_index=False, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name='proposal',
            name='info_requested_by',
            field=models.ForeignKey(blank=True, db_index=False, editable=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name='proposal',
            name='integration',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='proposals', to='approvals.integration'),
        ),
        migrations.AlterField(
            model_name='proposal',
            name='manual_requested_by',
            field=models.ForeignKey(blank=True, db_index=False, editable=False, help_text='An operator who asked to close this by hand without the approvals the policy required', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name='proposal',
            name='parent',
            field=models.ForeignKey(blank=True, db_index=False, editable=False, help_text='The proposal this one was branched from, keeping one thread', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='branches', to='approvals.proposal'),
        ),
        migrations.AlterField(
            model_name='reviewtask',
            name='proposal',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='review_tasks', to='approvals.proposal'),
        ),
        migrations.AlterField(
            model_name='reviewtask',
            name='state',
            field=models.CharField(choices=[('waiting', 'Waiting'), ('active', 'Active'), ('satisfied', 'Satisfied'), ('rejected', 'Rejected'), ('closed', 'Closed')], default='waiting', max_length=10),
        ),
        migrations.AddIndex(
            model_name='proposal',
            index=models.Index(condition=models.Q(('expires_at__isnull', False)), fields=['expires_at'], name='proposal_expires_set'),
        ),
        migrations.AddIndex(
            model_name='proposal',
            index=models.Index(condition=models.Q(('parent__isnull', False)), fields=['parent'], name='proposal_parent_set'),
        ),
        migrations.AddIndex(
            model_name='proposal',
            index=models.Index(condition=models.Q(('claimed_by__isnull', False)), fields=['claimed_by'], name='proposal_claimed_by_set'),
        ),
        migrations.AddIndex(
            model_name='proposal',
            index=models.Index(condition=models.Q(('edited_by__isnull', False)), fields=['edited_by'], name='proposal_edited_by_set'),
        ),
        migrations.AddIndex(
            model_name='proposal',
            index=models.Index(condition=models.Q(('held_by__isnull', False)), fields=['held_by'], name='proposal_held_by_set'),
        ),
        migrations.AddIndex(
            model_name='proposal',
            index=models.Index(condition=models.Q(('info_requested_by__isnull', False)), fields=['info_requested_by'], name='proposal_info_asker_set'),
        ),
        migrations.AddIndex(
            model_name='proposal',
            index=models.Index(condition=models.Q(('manual_requested_by__isnull', False)), fields=['manual_requested_by'], name='proposal_manual_asker_set'),
        ),
    ]
