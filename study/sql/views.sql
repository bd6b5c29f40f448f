-- facehpo's read-only SQL views over Optuna's RDB tables (docs/sql.md).
--
-- Written for Optuna's schema at alembic head @ALEMBIC_HEAD@ (optuna @OPTUNA_RANGE@;
-- study/views.py checks both before creating them). One statement per view, each ending
-- with ";" at the end of a line. study/views.py expands three macros per dialect:
--   JSON_TEXT(col)        a JSON string in `col` -> text; NULL for anything else
--   JSON_NUM(col, path)   the JSON number at `path` ('$', '$.lr[0]', '$[1][0]') -> float;
--                         NULL when absent, not a number or not valid JSON (NaN, Infinity)
--   SECONDS_BETWEEN(a, b) b - a in seconds (float)
-- Only studies with a "stage" user attribute (the ones facehpo creates) appear.

CREATE VIEW facehpo_views_version AS
SELECT @VIEWS_VERSION@ AS version,
       '@ALEMBIC_HEAD@' AS optuna_alembic,
       '@OPTUNA_RANGE@' AS optuna_versions;

CREATE VIEW facehpo_trials AS
SELECT s.study_name AS study,
       JSON_TEXT(st.value_json) AS stage,
       t.number AS trial,
       CAST(JSON_NUM(rn.value_json, '$') AS INTEGER) AS round,
       CAST(t.state AS VARCHAR(8)) AS state,
       v.value AS val_accuracy,
       JSON_NUM(vl.value_json, '$') AS val_loss,
       lr.param_value AS lr,
       rg.param_value AS reg,
       CAST(JSON_NUM(ep.value_json, '$') AS INTEGER) AS epochs,
       JSON_TEXT(wk.value_json) AS worker,
       JSON_TEXT(ho.value_json) AS host,
       JSON_TEXT(dv.value_json) AS device,
       t.datetime_start,
       t.datetime_complete,
       SECONDS_BETWEEN(t.datetime_start, t.datetime_complete) AS duration_s,
       JSON_TEXT(fr.value_json) AS fail_reason
FROM studies s
JOIN study_user_attributes st ON st.study_id = s.study_id AND st.key = 'stage'
JOIN trials t ON t.study_id = s.study_id
LEFT JOIN trial_values v
       ON v.trial_id = t.trial_id AND v.objective = 0 AND v.value_type = 'FINITE'
LEFT JOIN trial_params lr ON lr.trial_id = t.trial_id AND lr.param_name = 'lr'
LEFT JOIN trial_params rg ON rg.trial_id = t.trial_id AND rg.param_name = 'reg'
LEFT JOIN trial_user_attributes rn ON rn.trial_id = t.trial_id AND rn.key = 'round'
LEFT JOIN trial_user_attributes vl ON vl.trial_id = t.trial_id AND vl.key = 'val_loss'
LEFT JOIN trial_user_attributes ep ON ep.trial_id = t.trial_id AND ep.key = 'epochs'
LEFT JOIN trial_user_attributes wk ON wk.trial_id = t.trial_id AND wk.key = 'worker'
LEFT JOIN trial_user_attributes ho ON ho.trial_id = t.trial_id AND ho.key = 'host'
LEFT JOIN trial_user_attributes dv ON dv.trial_id = t.trial_id AND dv.key = 'device'
LEFT JOIN trial_user_attributes fr ON fr.trial_id = t.trial_id AND fr.key = 'fail_reason';

-- Ranking as in study/results.py: highest val_accuracy, ties to the lower val_loss
-- (missing loss last), then to the lower trial number. COMPLETE trials with a finite value.
CREATE VIEW facehpo_top AS
SELECT study, stage,
       ROW_NUMBER() OVER (PARTITION BY study
                          ORDER BY val_accuracy DESC, val_loss ASC NULLS LAST, trial ASC) AS rank,
       trial, val_accuracy, val_loss, lr, reg, epochs, worker, host, device,
       datetime_start, datetime_complete, duration_s
FROM facehpo_trials
WHERE state = 'COMPLETE' AND val_accuracy IS NOT NULL;

CREATE VIEW facehpo_best AS
SELECT study, stage, trial, val_accuracy, val_loss, lr, reg, epochs, worker, host, device,
       datetime_start, datetime_complete, duration_s
FROM facehpo_top
WHERE rank = 1;

CREATE VIEW facehpo_lineage AS
SELECT s.study_name AS study,
       JSON_TEXT(st.value_json) AS stage,
       JSON_TEXT(pa.value_json) AS parent,
       CAST(JSON_NUM(k.value_json, '$') AS INTEGER) AS k,
       JSON_TEXT(ru.value_json) AS rule,
       COALESCE(JSON_TEXT(sa.value_json), 'random') AS sampler,
       CAST(JSON_NUM(rs.value_json, '$') AS INTEGER) AS round_size,
       CAST(JSON_NUM(se.value_json, '$') AS BIGINT) AS seed,
       CAST(COALESCE(JSON_NUM(ss.value_json, '$'), JSON_NUM(se.value_json, '$')) AS BIGINT) AS sampler_seed,
       JSON_NUM(sp.value_json, '$.lr[0]') AS lr_low,
       JSON_NUM(sp.value_json, '$.lr[1]') AS lr_high,
       JSON_NUM(sp.value_json, '$.reg[0]') AS reg_low,
       JSON_NUM(sp.value_json, '$.reg[1]') AS reg_high
FROM studies s
JOIN study_user_attributes st ON st.study_id = s.study_id AND st.key = 'stage'
LEFT JOIN study_user_attributes pa ON pa.study_id = s.study_id AND pa.key = 'parent'
LEFT JOIN study_user_attributes k ON k.study_id = s.study_id AND k.key = 'k'
LEFT JOIN study_user_attributes ru ON ru.study_id = s.study_id AND ru.key = 'rule'
LEFT JOIN study_user_attributes sa ON sa.study_id = s.study_id AND sa.key = 'sampler'
LEFT JOIN study_user_attributes rs ON rs.study_id = s.study_id AND rs.key = 'round_size'
LEFT JOIN study_user_attributes se ON se.study_id = s.study_id AND se.key = 'seed'
LEFT JOIN study_user_attributes ss ON ss.study_id = s.study_id AND ss.key = 'sampler_seed'
LEFT JOIN study_user_attributes sp ON sp.study_id = s.study_id AND sp.key = 'space';

-- Trial attributes source_study / source_trial, else the study's parent / source_trial.
CREATE VIEW facehpo_final AS
SELECT s.study_name AS study,
       t.number AS trial,
       CAST(t.state AS VARCHAR(8)) AS state,
       COALESCE(JSON_TEXT(ss.value_json), JSON_TEXT(pa.value_json)) AS source_study,
       CAST(COALESCE(JSON_NUM(tr.value_json, '$'), JSON_NUM(sr.value_json, '$')) AS INTEGER)
           AS source_trial,
       v.value AS val_accuracy,
       JSON_NUM(ta.value_json, '$') AS test_accuracy,
       JSON_NUM(tl.value_json, '$') AS test_loss,
       CAST(JSON_NUM(cm.value_json, '$[0][0]') AS INTEGER) AS tn,
       CAST(JSON_NUM(cm.value_json, '$[0][1]') AS INTEGER) AS fp,
       CAST(JSON_NUM(cm.value_json, '$[1][0]') AS INTEGER) AS fn,
       CAST(JSON_NUM(cm.value_json, '$[1][1]') AS INTEGER) AS tp
FROM studies s
JOIN study_user_attributes st ON st.study_id = s.study_id AND st.key = 'stage'
JOIN trials t ON t.study_id = s.study_id
LEFT JOIN study_user_attributes pa ON pa.study_id = s.study_id AND pa.key = 'parent'
LEFT JOIN study_user_attributes sr ON sr.study_id = s.study_id AND sr.key = 'source_trial'
LEFT JOIN trial_values v
       ON v.trial_id = t.trial_id AND v.objective = 0 AND v.value_type = 'FINITE'
LEFT JOIN trial_user_attributes ss ON ss.trial_id = t.trial_id AND ss.key = 'source_study'
LEFT JOIN trial_user_attributes tr ON tr.trial_id = t.trial_id AND tr.key = 'source_trial'
LEFT JOIN trial_user_attributes ta ON ta.trial_id = t.trial_id AND ta.key = 'test_accuracy'
LEFT JOIN trial_user_attributes tl ON tl.trial_id = t.trial_id AND tl.key = 'test_loss'
LEFT JOIN trial_user_attributes cm ON cm.trial_id = t.trial_id AND cm.key = 'confusion'
WHERE JSON_TEXT(st.value_json) = 'final';

-- One row per reported epoch; step is the 0-based epoch KerasPruningCallback reports.
CREATE VIEW facehpo_curves AS
SELECT s.study_name AS study,
       JSON_TEXT(st.value_json) AS stage,
       t.number AS trial,
       iv.step AS epoch,
       CASE WHEN iv.intermediate_value_type = 'FINITE' THEN iv.intermediate_value END
           AS val_accuracy
FROM studies s
JOIN study_user_attributes st ON st.study_id = s.study_id AND st.key = 'stage'
JOIN trials t ON t.study_id = s.study_id
JOIN trial_intermediate_values iv ON iv.trial_id = t.trial_id;
