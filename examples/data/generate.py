"""Regenerate the bundled example datasets (deterministic; written for kubetune, license-clean).

    python examples/data/generate.py

Writes sentiment-ko.jsonl (alpaca: instruction/input/output), support-chat-ko.jsonl (chat: messages) and
medical-qa-ko.jsonl (qa: question/answer). The sentences are composed from hand-written phrases so every
row is plausible Korean and the label is known exactly.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

TOPICS = [
    "이 식당 음식은",
    "호텔 직원들은",
    "배송 속도는",
    "이번 업데이트는",
    "새로 산 노트북은",
    "영화 결말은",
    "카페 분위기는",
    "고객센터 상담은",
    "이 책은",
    "콘서트 음향은",
    "앱 디자인은",
    "택배 포장은",
    "오늘 수업 내용은",
    "헬스장 시설은",
    "게임 그래픽은",
    "이 향수는",
    "놀이공원은",
    "새 이어폰 음질은",
    "이 화장품은",
    "렌터카 상태는",
]
PREDICATES = {
    "positive": [
        "정말 마음에 들어요!",
        "기대 이상이었어요.",
        "최고예요. 강력 추천합니다!",
        "너무 만족스러워요.",
        "생각보다 훨씬 좋았어요.",
        "완벽했어요. 꼭 다시 이용할게요.",
        "감동적이었어요.",
        "볼수록 기분이 좋아져요.",
    ],
    "negative": [
        "정말 실망스러웠어요.",
        "최악이었어요. 다시는 안 갈 거예요.",
        "기대 이하라서 화가 나요.",
        "너무 별로였어요.",
        "돈이 아까울 정도로 형편없었어요.",
        "엉망이라서 짜증나네요.",
        "불만족스러웠어요.",
        "생각보다 훨씬 나빴어요.",
    ],
    "neutral": [
        "평범한 수준이에요.",
        "그냥 보통이에요.",
        "예상했던 그대로였어요.",
        "특별히 좋지도 나쁘지도 않았어요.",
        "무난한 편이에요.",
        "지난번과 비슷했어요.",
        "가격대에 맞는 정도예요.",
        "어제 처음 확인했어요.",
    ],
}
# One token each in common LLM vocabularies (a Hangul syllable is ~3 byte tokens in SmolLM2's): the whole answer
# is the deciding token and EOS, the cheapest to train on a CPU and a clean answer to show.
LABELS = {"positive": "positive", "negative": "negative", "neutral": "neutral"}
INSTRUCTIONS = [
    "다음 문장의 감정을 분석해주세요.",
    "이 리뷰의 감정을 positive, negative, neutral 중 하나로 분류하세요.",
    "아래 문장에 담긴 감정을 알려주세요.",
]


def sentiment_rows(rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for label, predicates in PREDICATES.items():
        for topic in TOPICS:
            for predicate in predicates:
                rows.append(
                    {
                        "instruction": rng.choice(INSTRUCTIONS),
                        "input": f"{topic} {predicate}",
                        # The label alone: an explanation after it cost most of the training compute and came out
                        # garbled from a 135M model; the label is what the demo scores.
                        "output": LABELS[label],
                    }
                )
    rng.shuffle(rows)
    return rows


SUPPORT = [
    (
        ["제품 배송은 얼마나 걸리나요?", "주문하면 언제 도착해요?", "배송 기간이 궁금해요."],
        "일반 배송은 결제 후 2~3일, 빠른 배송은 1일이 걸립니다. 주말과 공휴일은 배송일에서 제외됩니다.",
    ),
    (
        ["환불 정책이 궁금합니다.", "환불받을 수 있나요?", "구매한 상품을 환불하고 싶어요."],
        "구매 후 14일 이내의 미개봉 상품은 전액 환불됩니다. 개봉한 상품은 상태를 확인한 뒤 부분 환불해 드립니다.",
    ),
    (
        ["교환은 어떻게 하나요?", "사이즈가 안 맞아서 교환하고 싶어요.", "다른 색상으로 바꿀 수 있나요?"],
        "마이페이지의 주문 내역에서 '교환 신청'을 눌러 주세요. 수거 기사님이 방문한 뒤 새 상품을 보내 드립니다.",
    ),
    (
        ["비밀번호를 잊어버렸어요.", "로그인이 안 돼요.", "비밀번호 재설정은 어디서 하나요?"],
        "로그인 화면의 '비밀번호 찾기'에서 가입한 이메일을 입력하시면 재설정 링크를 보내 드립니다.",
    ),
    (
        ["결제 수단은 뭐가 있나요?", "카드 말고 다른 결제 방법이 있나요?", "무통장 입금도 되나요?"],
        "신용카드, 체크카드, 계좌이체, 무통장 입금, 간편결제를 지원합니다. 무통장 입금은 24시간 안에 입금해 주세요.",
    ),
    (
        ["쿠폰은 어떻게 쓰나요?", "할인 쿠폰이 적용이 안 돼요.", "쿠폰 사용 방법을 알려주세요."],
        "결제 화면의 '쿠폰 적용'에서 쿠폰을 고르시면 됩니다. 최소 주문 금액과 유효 기간을 꼭 확인해 주세요.",
    ),
    (
        ["고객센터 운영 시간이 어떻게 되나요?", "상담원과 통화하고 싶어요.", "전화 상담은 언제 가능해요?"],
        "고객센터는 평일 오전 9시부터 오후 6시까지 운영합니다. 점심시간(12시~1시)에는 채팅 상담을 이용해 주세요.",
    ),
    (
        ["주문을 취소하고 싶어요.", "방금 한 주문 취소되나요?", "주문 취소는 어떻게 하나요?"],
        "상품이 출고되기 전이라면 마이페이지에서 바로 취소할 수 있습니다. 출고 후에는 반품으로 진행됩니다.",
    ),
    (
        ["배송지를 바꾸고 싶어요.", "주소를 잘못 입력했어요.", "배송 주소 변경이 가능한가요?"],
        "출고 전에는 주문 상세에서 배송지를 바꿀 수 있습니다. 이미 출고되었다면 택배사에 직접 변경을 요청해 주세요.",
    ),
    (
        ["회원 탈퇴는 어떻게 하나요?", "계정을 삭제하고 싶어요.", "탈퇴하면 적립금은 어떻게 되나요?"],
        "마이페이지의 '회원 정보'에서 탈퇴할 수 있습니다. 탈퇴하면 남은 적립금과 쿠폰은 모두 사라집니다.",
    ),
    (
        ["상품이 파손되어 도착했어요.", "받은 물건이 깨져 있어요.", "불량품이 왔어요."],
        "불편을 드려 죄송합니다. 사진을 첨부해 1:1 문의를 남겨 주시면 확인 후 무료로 교환 또는 환불해 드립니다.",
    ),
    (
        ["적립금은 언제 들어오나요?", "포인트 적립 기준이 궁금해요.", "리뷰 쓰면 적립금 주나요?"],
        "구매 확정 후 결제 금액의 1%가 적립되고, 사진 리뷰를 남기시면 500원이 추가로 적립됩니다.",
    ),
]
FOLLOW_UPS = [
    ("감사합니다!", "도움이 되어 기쁩니다. 더 궁금한 점이 있으면 언제든 말씀해 주세요."),
    ("알겠습니다. 고마워요.", "이용해 주셔서 감사합니다. 좋은 하루 보내세요!"),
]


def support_rows(rng: random.Random) -> list[dict]:
    rows = []
    for questions, answer in SUPPORT:
        for question in questions:
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            rows.append({"messages": messages})
            thanks, reply = rng.choice(FOLLOW_UPS)
            rows.append(
                {"messages": [*messages, {"role": "user", "content": thanks}, {"role": "assistant", "content": reply}]}
            )
    rng.shuffle(rows)
    return rows


CAVEAT = "증상이 계속되거나 심해지면 반드시 의료진과 상담하세요."
MEDICAL = [
    (
        ["당뇨병의 주요 증상은 무엇인가요?", "당뇨병이 있으면 어떤 증상이 나타나나요?"],
        "대표적인 증상은 심한 갈증, 잦은 소변, 늘어난 식욕과 체중 감소입니다. 피로감, 시야 흐림, 더딘 상처 회복도 "
        "나타날 수 있습니다. 이런 증상이 이어지면 혈당 검사를 받아 보세요.",
    ),
    (
        ["고혈압 관리를 위한 생활습관은?", "혈압을 낮추려면 생활에서 무엇을 바꿔야 하나요?"],
        "소금 섭취를 하루 5g 이하로 줄이고, 채소와 과일을 충분히 드세요. 주 5일 30분 이상 걷기 같은 유산소 운동, "
        "적정 체중 유지, 금연과 절주, 규칙적인 혈압 측정이 도움이 됩니다.",
    ),
    (
        ["감기와 독감은 어떻게 다른가요?", "독감과 감기를 구별하는 방법이 있나요?"],
        "감기는 콧물과 목 통증이 천천히 시작되고 대개 가볍습니다. 독감은 고열, 근육통, 심한 피로가 갑자기 "
        "시작되며 폐렴 같은 합병증이 생길 수 있어 예방접종이 권장됩니다.",
    ),
    (
        ["빈혈이 생기는 원인은 무엇인가요?", "빈혈은 왜 생기나요?"],
        "가장 흔한 원인은 철분 부족입니다. 그 밖에 비타민 B12나 엽산 부족, 출혈, 만성 질환도 원인이 됩니다. "
        "원인에 따라 치료가 다르므로 혈액 검사로 확인하는 것이 좋습니다.",
    ),
    (
        ["불면증을 줄이는 방법이 있나요?", "잠이 잘 안 올 때 어떻게 해야 하나요?"],
        "매일 같은 시간에 자고 일어나고, 오후에는 카페인을 피하세요. 잠들기 전 휴대폰 화면을 멀리하고 침실을 "
        "어둡고 시원하게 유지하면 도움이 됩니다.",
    ),
    (
        ["탈수 증상은 어떻게 알 수 있나요?", "몸에 수분이 부족하면 어떤 신호가 나타나나요?"],
        "입 마름, 진한 색의 소변, 어지러움, 두통, 피로감이 대표적입니다. 물을 조금씩 자주 마시고, 구토나 "
        "설사가 심하면 전해질 음료를 함께 드세요.",
    ),
    (
        ["위염에 좋은 식습관은?", "속쓰림이 잦을 때 어떻게 먹어야 하나요?"],
        "맵고 짠 음식, 술, 카페인을 줄이고 규칙적으로 조금씩 드세요. 식사 직후 눕지 말고, 늦은 밤 야식은 "
        "피하는 것이 좋습니다.",
    ),
    (
        ["골다공증을 예방하려면?", "뼈 건강을 지키는 방법이 궁금해요."],
        "칼슘과 비타민 D를 충분히 섭취하고, 걷기나 가벼운 근력 운동처럼 체중이 실리는 운동을 꾸준히 하세요. "
        "흡연과 과음은 뼈를 약하게 합니다.",
    ),
    (
        ["두통이 자주 있을 때 주의할 점은?", "잦은 두통은 왜 생기나요?"],
        "수면 부족, 스트레스, 카페인 금단, 눈의 피로가 흔한 원인입니다. 갑자기 생긴 극심한 두통이나 마비, "
        "시야 이상이 함께 오면 즉시 응급실을 찾으세요.",
    ),
    (
        ["알레르기 비염을 관리하는 방법은?", "비염 증상을 줄이려면 어떻게 하나요?"],
        "원인 물질을 피하고 실내를 자주 환기하며 침구를 뜨거운 물로 세탁하세요. 식염수 코 세척이 도움이 되고, "
        "증상이 심하면 진료 후 약을 처방받으세요.",
    ),
    (
        ["콜레스테롤 수치를 낮추려면?", "고지혈증에 좋은 생활습관은?"],
        "포화지방과 트랜스지방을 줄이고 통곡물, 채소, 생선을 자주 드세요. 규칙적인 운동과 체중 조절이 "
        "중요하며, 수치가 높으면 약물 치료가 필요할 수 있습니다.",
    ),
    (
        ["화상을 입었을 때 응급처치는?", "뜨거운 물에 데었을 때 어떻게 해야 하나요?"],
        "흐르는 시원한 물에 10~20분 식히고, 물집은 터뜨리지 마세요. 얼음을 직접 대지 말고, 범위가 넓거나 "
        "얼굴과 손에 생긴 화상은 병원에서 치료받으세요.",
    ),
]


def medical_rows(rng: random.Random) -> list[dict[str, str]]:
    rows = [
        {"question": question, "answer": f"{answer} {CAVEAT}"}
        for questions, answer in MEDICAL
        for question in questions
    ]
    rng.shuffle(rows)
    return rows


def datasets() -> dict[str, list[dict]]:
    """File name -> rows, for every bundled dataset."""
    return {
        "sentiment-ko.jsonl": sentiment_rows(random.Random(7)),
        "support-chat-ko.jsonl": support_rows(random.Random(7)),
        "medical-qa-ko.jsonl": medical_rows(random.Random(7)),
    }


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main() -> None:
    for name, rows in datasets().items():
        (HERE / name).write_text(to_jsonl(rows), encoding="utf-8")
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
