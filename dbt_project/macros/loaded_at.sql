{#- When the raw table was last loaded: a deterministic created_at, so a rerun changes no row. -#}
{% macro loaded_at(table_name) -%}
    (
        select max(loaded_at)
        from {{ source('raw', '_load_log') }}
        where table_name = '{{ table_name }}'
    )
{%- endmacro %}
