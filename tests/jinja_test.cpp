// The Jinja interpreter construct by construct (expected strings are Python jinja2's renders), and its errors.
#include <gtest/gtest.h>

#include "chat/jinja.h"

namespace uneven::jinja {
namespace {

struct RenderCase {
  const char* name;
  const char* source;
  const char* expected;
};

// Rendered with these variables; the expected strings were produced by jinja2 3.1 configured as
// transformers configures it (trim_blocks, lstrip_blocks, loopcontrols, its tojson, strftime_now at
// 2024-07-26 12:00).
const char* kVars = "{\"s\": \"Hello World\", \"n\": 7, \"f\": 2.5, \"l\": [3, 1, 2], \"d\": {\"b\": 1, \"a\": [1, 2], \"c\": null}, \"msgs\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}, {\"role\": \"user\", \"content\": \"bye\"}], \"u\": \"héllo wörld\", \"empty\": \"\", \"t\": true, \"none\": null, \"people\": [{\"name\": \"Bo\", \"age\": 30}, {\"name\": \"al\", \"age\": 20}, {\"name\": \"Cy\"}]}";
const RenderCase kCases[] = {
    {"text only", "plain text", "plain text"},
    {"output", "{{ s }} {{ n }} {{ f }} {{ t }} {{ none }} {{ missing }}|", "Hello World 7 2.5 True None |"},
    {"if elif else", "{% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}other{% endif %},{% endfor %}", "one,two,other,"},
    {"loop vars", "{% for x in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}", "1032TrueFalse3;2121FalseFalse3;3210FalseTrue3;"},
    {"loop prev next cycle", "{% for x in l %}{{ loop.previtem }}/{{ loop.nextitem }}/{{ loop.cycle('a', 'b') }} {% endfor %}", "/1/a 3/2/b 1//a "},
    {"for items", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", "b=1;a=[1, 2];c=None;"},
    {"for dict keys", "{% for k in d %}{{ k }}{% endfor %}", "bac"},
    {"for filter", "{% for x in l if x > 1 %}{{ x }}{{ loop.length }}{% endfor %}", "3222"},
    {"for else", "{% for x in [] %}x{% else %}empty{% endfor %}", "empty"},
    {"break continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", "0134"},
    {"set scoping", "{% set a = 1 %}{% for x in l %}{% set a = x %}{% endfor %}{{ a }}", "1"},
    {"namespace", "{% set ns = namespace(total=0, names=[]) %}{% for x in l %}{% set ns.total = ns.total + x %}{% endfor %}{{ ns.total }}", "6"},
    {"block set", "{% set block %}a{{ n }}b{% endset %}[{{ block }}]", "[a7b]"},
    {"tuple set", "{% set a, b = 1, 2 %}{{ a }}{{ b }}", "12"},
    {"macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bo') }} {{ greet('Al', punct='?') }} {{ greet(name='Cy') }}", "Hi Bo! Hi Al? Hi Cy!"},
    {"macro sees globals", "{% set g = 'G' %}{% macro m() %}{{ g }}{{ s }}{% endmacro %}{{ m() }}", "GHello World"},
    {"comments", "a{# comment #}b{#- trimmed -#}  c", "abc"},
    {"whitespace control", "a  {%- if true -%}  b  {%- endif -%}  c {{- ' d ' -}} e", "abc d e"},
    {"trim and lstrip blocks", "<ul>\n  {% for x in l %}\n    <li>{{ x }}</li>\n  {% endfor %}\n</ul>\n", "<ul>\n    <li>3</li>\n    <li>1</li>\n    <li>2</li>\n</ul>"},
    {"lstrip only at line start", "x {% if true %}y{% endif %}\n  {# c #}\nz", "x yz"},
    {"plus disables lstrip", "a\n  {%+ if true %}b{% endif %}", "a\n  b"},
    {"raw", "{% raw %}{{ not rendered }}{% endraw %}", "{{ not rendered }}"},
    {"literals", "{{ 'a\\tb\\n' }}{{ \"q\\\"\" }}{{ 1.5e3 }}{{ 10 }}{{ [1, 'x', none, true] }}{{ {'k': 'v', 'n': 1} }}{{ (1, 2) }}{{ True }}{{ None }}", "a\tb\nq\"1500.010[1, 'x', None, True]{'k': 'v', 'n': 1}(1, 2)TrueNone"},
    {"escapes", "{{ '\\u00e9\\x41\\\\' }}", "éA\\"},
    {"attribute and subscript", "{{ d.b }}{{ d['a'][1] }}{{ msgs[0].role }}{{ msgs[-1]['content'] }}{{ d.zzz }}{{ l[10] }}|", "12userbye|"},
    {"slices", "{{ l[::-1] }}{{ l[1:] }}{{ l[:-1] }}{{ s[::2] }}{{ u[1:4] }}{{ s[-5:] }}", "[2, 1, 3][1, 2][3, 1]HloWrdéllWorld"},
    {"arithmetic", "{{ 7 + 2 }} {{ 7 - 2 }} {{ 7 * 2 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 4 / 2 }} {{ 'ab' * 3 }} {{ [1] + [2] }} {{ 1 + 2.5 }}", "9 5 14 3.5 3 -4 1 2 1024 2.0 ababab [1, 2] 3.5"},
    {"concat", "{{ 'a' ~ 1 ~ none ~ true }}", "a1NoneTrue"},
    {"comparisons", "{{ 1 < 2 }} {{ 2 <= 1 }} {{ 'a' != 'b' }} {{ 1 == 1.0 }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 5 }} {{ [1, 2] == [1, 2] }}", "True False True True True False True"},
    {"logic", "{{ true and false }} {{ 0 or 'x' }} {{ not none }} {{ '' or [] }} {{ 1 and 2 }}", "False x True [] 2"},
    {"in", "{{ 'ell' in s }} {{ 2 in l }} {{ 'a' in d }} {{ 'z' not in d }} {{ 5 not in l }}", "True True True True True"},
    {"is tests", "{{ n is defined }}{{ q is undefined }}{{ none is none }}{{ s is string }}{{ d is mapping }}{{ l is iterable }}{{ s is sequence }}{{ n is number }}{{ f is integer }}{{ t is boolean }}{{ t is true }}{{ t is false }}{{ n is odd }}{{ n is even }}{{ n is equalto 7 }}{{ n is not none }}{{ l is sequence }}{{ d is sequence }}{{ n is iterable }}", "TrueTrueTrueTrueTrueTrueTrueTrueFalseTrueTrueFalseTrueFalseTrueTrueTrueTrueFalse"},
    {"conditional expression", "{{ 'yes' if t else 'no' }} {{ 'yes' if none else 'no' }} [{{ 'x' if false }}]", "yes no []"},
    {"filters text", "{{ '  pad  ' | trim }}|{{ s | upper }}|{{ s | lower }}|{{ 'hello WORLD' | capitalize }}|{{ 'hello-world foo(bar)' | title }}|{{ s | length }}|{{ u | length }}|{{ l | count }}", "pad|HELLO WORLD|hello world|Hello world|Hello-World Foo(Bar)|11|11|3"},
    {"default", "{{ missing | default('dflt') }} {{ missing | d('x') }} {{ '' | default('e', true) }} {{ none | default('n') }} {{ s | default('no') }}", "dflt x e None Hello World"},
    {"tojson", "{{ d | tojson }} {{ 'é\"\\n' | tojson }} {{ [1.0, 1e20, 1e-7, 0.1] | tojson }}", "{\"b\": 1, \"a\": [1, 2], \"c\": null} \"é\\\"\\n\" [1.0, 1e+20, 1e-07, 0.1]"},
    {"tojson indent", "{{ d | tojson(indent=2) }}", "{\n  \"b\": 1,\n  \"a\": [\n    1,\n    2\n  ],\n  \"c\": null\n}"},
    {"tojson options", "{{ {'b': 1, 'a': 'é'} | tojson(sort_keys=true, ensure_ascii=true) }} {{ [1, {'a': 2}] | tojson(separators=(',', ':')) }}", "{\"a\": \"\\u00e9\", \"b\": 1} [1,{\"a\":2}]"},
    {"join first last list", "{{ l | join(', ') }} {{ l | first }} {{ l | last }} {{ 'abc' | list }} {{ people | join('/', attribute='name') }}", "3, 1, 2 3 2 ['a', 'b', 'c'] Bo/al/Cy"},
    {"string int float", "{{ 5 | string }}{{ '42' | int + 1 }} {{ '3.9' | int }} {{ 'x' | int }} {{ '2.5' | float }} {{ 3 | float }}", "543 3 0 2.5 3.0"},
    {"items", "{{ d | items | list }}", "[('b', 1), ('a', [1, 2]), ('c', None)]"},
    {"selectattr rejectattr", "{{ people | selectattr('age') | map(attribute='name') | list }} {{ people | rejectattr('age') | map(attribute='name') | join }} {{ people | selectattr('age', 'equalto', 20) | map(attribute='name') | first }}", "['Bo', 'al'] Cy al"},
    {"select reject map", "{{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('even') | list }} {{ ['a', 'b'] | map('upper') | list }} {{ [0, 1, none, ''] | select | list }}", "[1, 3] [1, 3] ['A', 'B'] [1]"},
    {"replace safe escape", "{{ s | replace('o', '0') }} {{ s | replace('o', '0', 1) }} {{ '<a&b>' | safe }} {{ '<a&\"b\">' | e }}", "Hell0 W0rld Hell0 World <a&b> &lt;a&amp;&#34;b&#34;&gt;"},
    {"unique reverse sort", "{{ ['b', 'A', 'a', 'c'] | unique | list }} {{ l | reverse | list }} {{ 'abc' | reverse }} {{ l | sort }} {{ ['b', 'A', 'c'] | sort }} {{ l | sort(reverse=true) }} {{ people | sort(attribute='name') | map(attribute='name') | list }}", "['b', 'A', 'c'] [2, 1, 3] cba [1, 2, 3] ['A', 'b', 'c'] [3, 2, 1] ['al', 'Bo', 'Cy']"},
    {"dictsort", "{{ d | dictsort }}", "[('a', [1, 2]), ('b', 1), ('c', None)]"},
    {"abs round", "{{ -3 | abs }} {{ -2.5 | abs }} {{ 2.5 | round }} {{ 3.14159 | round(2) }} {{ 2.7 | round(0, 'floor') }} {{ 7 | round }}", "3 2.5 2.0 3.14 2.0 7"},
    {"indent wordcount", "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'Hello, wide world!' | wordcount }}", "a\n  b\n\n  c|  a\n  b|3"},
    {"str methods", "{{ '  x  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  x'.lstrip() }}|{{ 'x  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ s.startswith('He') }}{{ s.endswith('x') }}{{ s.startswith(('x', 'H')) }}|{{ s.replace('l', 'L') }}|{{ s.upper() }}{{ s.lower() }}{{ 'hello world'.title() }}|{{ s.find('o') }}{{ s.find('z') }}{{ s.count('l') }}|{{ '{} + {} = {x}'.format(1, 2, x=3) }}|{{ '-'.join(['a', 'b']) }}", "x|hi|x|x|['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']|TrueFalseTrue|HeLLo WorLd|HELLO WORLDhello worldHello World|4-13|1 + 2 = 3|a-b"},
    {"dict methods", "{{ d.keys() | list }} {{ d.values() | list }} {{ d.get('b') }} {{ d.get('z', 'dflt') }} {{ d.get('z') }}", "['b', 'a', 'c'] [1, [1, 2], None] 1 dflt None"},
    {"range dict", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(3, 0, -1) | list }} {{ dict(a=1, b='x') }}", "[0, 1, 2] [1, 3, 5] [3, 2, 1] {'a': 1, 'b': 'x'}"},
    {"strftime_now", "{{ strftime_now('%d %b %Y') }} {{ strftime_now('%Y-%m-%d %A') }}", "26 Jul 2024 2024-07-26 Friday"},
    {"unicode upper", "{{ u | upper }} {{ u.title() }} {{ u | capitalize }}", "HÉLLO WÖRLD Héllo Wörld Héllo wörld"},
    {"python str of containers", "{{ [\"it's\", 'a', 1.0, none, true] }} {{ {'k': ['v']} }}", "[\"it's\", 'a', 1.0, None, True] {'k': ['v']}"},
    {"nested data", "{% for m in msgs %}{{ m.role }}:{{ m.content }}{% if not loop.last %}, {% endif %}{% endfor %}", "user:hi, assistant:yo, user:bye"},
    {"undefined falsy", "{% if missing %}x{% else %}falsy{% endif %}{% if d.nothing is not defined %} undef{% endif %}", "falsy undef"},
    {"filter on expression", "{{ (l | length) + 1 }} {{ -l | length if false else 'neg' }} {{ l | length - 1 }}", "4 neg 2"},
    {"trailing newline dropped", "line\n", "line"},
};

std::tm fixed_now() {
  std::tm tm{};
  tm.tm_year = 124;
  tm.tm_mon = 6;
  tm.tm_mday = 26;
  tm.tm_hour = 12;
  tm.tm_wday = 5;
  tm.tm_yday = 207;
  return tm;
}

std::string render(const std::string& source, const nlohmann::ordered_json& vars = nlohmann::ordered_json::object(),
                   Options options = {}) {
  if (!options.now) options.now = fixed_now;
  return Template(source, options).render(vars);
}

// The message of the uneven::Error that parsing or rendering throws ("" when none is thrown).
std::string error_of(const std::string& source, Options options = {}) {
  try {
    render(source, nlohmann::ordered_json::object(), options);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Jinja, RendersEachConstructAsJinja2Does) {
  auto vars = nlohmann::ordered_json::parse(kVars);
  for (const auto& c : kCases) {
    std::string got;
    try {
      got = render(c.source, vars);
    } catch (const Error& e) {
      ADD_FAILURE() << c.name << ": threw " << e.what();
      continue;
    }
    EXPECT_EQ(got, c.expected) << c.name << ": " << c.source;
  }
}

TEST(Jinja, GenerationBlockIsTransparent) {
  EXPECT_EQ(render("{% generation %}gen {{ 1 }}{% endgeneration %}"), "gen 1");
}

TEST(Jinja, KeepsDictOrderOfTheInput) {
  auto vars = nlohmann::ordered_json::parse(R"({"d": {"z": 1, "a": {"y": 2, "b": 3}}})");
  EXPECT_EQ(render("{{ d | tojson }}", vars), R"({"z": 1, "a": {"y": 2, "b": 3}})");
}

TEST(Jinja, ParseErrorsSayWhereAndWhat) {
  auto has = [](const std::string& what, const std::string& part) { return what.find(part) != std::string::npos; };
  std::string e = error_of("line\n{% if x %}open");
  EXPECT_TRUE(has(e, "expected 'endif'")) << e;
  e = error_of("{% for x in y %}{% endif %}");
  EXPECT_TRUE(has(e, "1:20") && has(e, "unexpected 'endif'")) << e;
  e = error_of("a\n  {{ x | nosuchfilter }}");
  EXPECT_TRUE(has(e, "2:10") && has(e, "unknown filter 'nosuchfilter'")) << e;
  e = error_of("{{ x is nosuchtest }}");
  EXPECT_TRUE(has(e, "unknown test 'nosuchtest'")) << e;
  e = error_of("{{ x ");
  EXPECT_TRUE(has(e, "unclosed tag")) << e;
  e = error_of("{# never closed");
  EXPECT_TRUE(has(e, "unclosed comment")) << e;
  e = error_of("{{ 'unterminated }}");
  EXPECT_TRUE(has(e, "unterminated string")) << e;
  e = error_of("{% include 'x' %}");
  EXPECT_TRUE(has(e, "unsupported tag 'include'")) << e;
  e = error_of("{{ (1 + }}");
  EXPECT_FALSE(e.empty());
  e = error_of("{{ a b }}");
  EXPECT_TRUE(has(e, "expected end of tag")) << e;
}

TEST(Jinja, RuntimeErrorsSayWhereAndWhat) {
  auto has = [](const std::string& what, const std::string& part) { return what.find(part) != std::string::npos; };
  std::string e = error_of("ok\n{{ 1 + 'a' }}");
  EXPECT_TRUE(has(e, "2:") && has(e, "unsupported operand type(s) for +: 'int' and 'str'")) << e;
  e = error_of("{{ missing.attr }}");
  EXPECT_TRUE(has(e, "'missing' is undefined")) << e;
  e = error_of("{{ nofunc() }}");
  EXPECT_TRUE(has(e, "'nofunc' is undefined")) << e;
  e = error_of("{{ 1 // 0 }}");
  EXPECT_TRUE(has(e, "by zero")) << e;
  e = error_of("{% set x = 1 %}{% set x.y = 2 %}");
  EXPECT_TRUE(has(e, "not a namespace")) << e;
  e = error_of("{% for x in 5 %}{% endfor %}");
  EXPECT_TRUE(has(e, "'int' object is not iterable")) << e;
  e = error_of("{{ 9223372036854775807 + 1 }}");
  EXPECT_TRUE(has(e, "integer overflow")) << e;
}

TEST(Jinja, RaiseExceptionCarriesTheTemplatesMessage) {
  try {
    render("before {{ raise_exception('Conversation roles must alternate user/assistant') }}");
    FAIL() << "expected raise_exception to throw";
  } catch (const RaisedError& e) {
    EXPECT_STREQ(e.what(), "Conversation roles must alternate user/assistant");
  }
}

TEST(Jinja, BoundsRunawayLoops) {
  Options o;
  o.max_iterations = 1000;
  std::string e = error_of("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}", o);
  EXPECT_NE(e.find("loop iterations exceed the limit of 1000"), std::string::npos) << e;
  e = error_of("{% for i in range(1000000000000) %}{% endfor %}");
  EXPECT_NE(e.find("range()"), std::string::npos) << e;
}

TEST(Jinja, BoundsRecursionAndNesting) {
  std::string e = error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_NE(e.find("macro calls nested deeper than"), std::string::npos) << e;
  std::string deep = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
  e = error_of(deep);
  EXPECT_NE(e.find("nesting deeper than"), std::string::npos) << e;
  std::string blocks;
  for (int i = 0; i < 500; ++i) blocks += "{% if true %}";
  e = error_of(blocks);
  EXPECT_NE(e.find("nesting deeper than"), std::string::npos) << e;
}

TEST(Jinja, BoundsOutputAndStringGrowth) {
  Options o;
  o.max_output_bytes = 1000;
  std::string e = error_of("{% for i in range(200) %}0123456789{% endfor %}", o);
  EXPECT_NE(e.find("output exceeds the limit of 1000 bytes"), std::string::npos) << e;
  e = error_of("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", o);
  EXPECT_NE(e.find("exceeds the limit"), std::string::npos) << e;
  e = error_of("{{ 'x' * 100000000000 }}");
  EXPECT_FALSE(e.empty());
}

TEST(Jinja, StrftimeNowUsesTheInjectedClock) {
  EXPECT_EQ(render("{{ strftime_now('%d %B %Y') }}"), "26 July 2024");
}

TEST(Jinja, VariablesMustBeAnObject) {
  EXPECT_THROW(Template("x").render(nlohmann::ordered_json::array()), Error);
}

}  // namespace
}  // namespace uneven::jinja
